"""``wbcgen push`` and ``wbcgen download``: share runs and datasets through the Hub."""
from __future__ import annotations

import json

import click

from wbcgen.cli.common import user_errors


@click.command("push")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--repo-id", required=True, metavar="USER/NAME", help="Target repo on the Hub.")
@click.option("--private", is_flag=True, help="Create the repo as private (if it does not exist yet).")
@click.option("--revision", default=None, metavar="BRANCH", help="Branch to push to (created if missing).")
@click.option("--dry-run", is_flag=True, help="Upload nothing; write the exact repo layout to --to DIR.")
@click.option("--to", "to", default=None, metavar="DIR", help="Folder that receives the --dry-run layout.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --to folder.")
@click.option("--eval", "eval_dir", default=None, metavar="EVAL_DIR",
              help="Attach an evaluation run (results.json, report.html) to a GAN/classifier push.")
@click.option("--license", "license_", default=None, metavar="ID",
              help="Licence id for the card (default: the training data's licence, cc-by-4.0 for PBC).")
@click.option("--data-source", default="auto", show_default=True,
              type=click.Choice(["auto", "pbc", "zheng2018", "bccd", "other"]),
              help="Training data named (and attributed) in the card (auto: the provenance recorded in "
                   "RUN_DIR; a dataset without generation.json needs it).")
@click.option("--hub-dataset", default=None, metavar="USER/NAME",
              help="Hub dataset the model was trained/evaluated on (card `datasets:` and model-index).")
@click.option("--base-model", default=None, metavar="USER/NAME",
              help="Hub model training started from (default: read from --init-from/--imagenet-weights).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def push_cmd(run_dir, repo_id, private, revision, dry_run, to, overwrite, eval_dir, license_, data_source,
             hub_dataset, base_model, as_json):
    """Push a GAN run, a classifier run, a generated dataset or an evaluation run to the Hub.

    \b
    The kind is detected from RUN_DIR:
      GAN run (generator/) or a folder of per-class runs -> one model repo,
          one subfolder per class: <class>/model.safetensors + config.json
      classifier run (model.safetensors + config.json)  -> model repo
      generated dataset (metadata.csv + class folders)  -> dataset repo (ImageFolder)
      evaluation run (results.json + report.html)       -> model repo
    Every repo gets a README.md card and a wbcgen.json manifest (sha256 of the weights,
    configs, metadata.csv and results; the card and reports may be edited on the Hub).
    A re-push deletes the class folders and files the previous push left that this one lacks.
    The token comes from HF_TOKEN or `hf auth login`; it is never printed.

    \b
    Examples:
      wbcgen push runs/gan --repo-id me/wbc-dcgan --eval out/eval --dry-run --to /tmp/repo
      wbcgen push runs/gan --repo-id me/wbc-dcgan --eval out/eval
      wbcgen push synthetic/ --repo-id me/wbc-synthetic --private
      wbcgen push runs/classifier/wnet --repo-id me/wnet-pbc --revision v1
    """
    from wbcgen.hub import push

    res = push(run_dir, repo_id, private=private, revision=revision, dry_run=dry_run, to=to, overwrite=overwrite,
               eval_dir=eval_dir, license=license_, data_source=data_source, hub_dataset=hub_dataset,
               base_model=base_model)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    elif dry_run:
        click.echo(f"dry run: {res['kind']} -> {res['repo_type']} repo {repo_id}; "
                   f"{len(res['files'])} files written to {res['path']} (nothing uploaded)")
    else:
        click.echo(f"pushed {res['kind']} to {res['repo_type']} repo {repo_id}: {res['commit_url']}")


@click.command("download")
@click.argument("source", metavar="REPO_ID_OR_PATH")
@click.option("--out", required=True, metavar="DIR", help="Folder to create (class folders + metadata.csv).")
@click.option("--revision", default=None, metavar="REV", help="Branch, tag or commit to download (pin it!).")
@click.option("--repo-type", type=click.Choice(["dataset", "model"]), default="dataset", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty --out folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def download_cmd(source, out, revision, repo_type, overwrite, as_json):
    """Download a released dataset (or model) and lay it out as folders wbcgen reads.

    \b
    Only safe files are fetched: *.safetensors *.json *.png *.jpg *.jpeg *.bmp *.csv *.md *.html;
    nothing is ever unpickled. A dataset with metadata.csv becomes <out>/<class>/<file> plus
    <out>/metadata.csv. The output appears only when complete (temp folder + rename).
    With HF_HUB_OFFLINE=1 it is served from the local Hub cache.

    \b
    Examples:
      wbcgen download me/wbc-synthetic --out cells/ --revision v1
      HF_HUB_OFFLINE=1 wbcgen download me/wbc-synthetic --out cells/
      wbcgen download me/wbc-dcgan --repo-type model --out gan/ && wbcgen sample --from gan/
      wbcgen download /tmp/repo --out cells/         # a local repo folder (e.g. push --dry-run)
    """
    from wbcgen.hub import download

    res = download(source, out, revision=revision, repo_type=repo_type, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        counts = res.get("counts")
        detail = ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else f"{res['files']} files"
        click.echo(f"downloaded {source} to {out}: {detail}")


def register(group: click.Group) -> None:
    group.add_command(push_cmd)
    group.add_command(download_cmd)
