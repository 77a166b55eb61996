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
@click.option("--revision", default=None, metavar="REV",
              help="Branch, tag or commit to download (pin it!); refs/convert/parquet for the Hub's parquet copy.")
@click.option("--repo-type", type=click.Choice(["dataset", "model"]), default="dataset", show_default=True)
@click.option("--split", default="all", show_default=True, metavar="train|test|validation|all",
              help="Which split of a parquet/ImageFolder dataset; 'all' keeps several as TRAIN/ TEST/ … folders.")
@click.option("--config", "config_name", default=None, metavar="NAME", help="Config of a multi-config dataset.")
@click.option("--max-per-class", type=int, default=None, metavar="N",
              help="At most N images per class and split (those with the smallest sha256: deterministic).")
@click.option("--label-map", default=None, metavar="0=neutrophil,…", help="Map label values or names to classes.")
@click.option("--alias", "aliases", multiple=True, metavar="NAME=CLASS",
              help="Extra label alias, e.g. --alias ig=neutrophil (repeatable).")
@click.option("--image-column", default=None, metavar="COL", help="Parquet column with the images (default: detected).")
@click.option("--label-column", default=None, metavar="COL", help="Parquet column with the labels (default: detected).")
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty --out folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def download_cmd(source, out, revision, repo_type, split, config_name, max_per_class, label_map, aliases,
                 image_column, label_column, overwrite, as_json):
    """Download a released dataset (or model) and lay it out as folders wbcgen reads.

    \b
    Only safe files are fetched: *.parquet *.safetensors *.json *.png *.jpg *.jpeg *.bmp *.tif
    *.tiff *.csv *.md *.html; nothing is ever unpickled or executed. A dataset becomes <out>/<class>/<file>
    plus <out>/metadata.csv:
      parquet (data/*.parquet, the card's data_files, refs/convert/parquet): images written as
        their original bytes named by sha256, labels through the alias table (ClassLabel names
        from the card), classes outside wbcgen's five skipped and counted, duplicates written
        once; SOURCE.md + source.json carry the licence, citation and counts
      ImageFolder (class folders, no metadata.csv): the same
      wbcgen dataset (metadata.csv): files copied, shards merged
    A synthetic set's generation.json + train_images.csv (its generators' training lists)
    come along (for refs/convert/parquet: from the default branch), so evaluate checks it
    for leakage.
    The output appears only when complete (temp folder + rename).
    With HF_HUB_OFFLINE=1 it is served from the local Hub cache.

    \b
    Examples:
      wbcgen download chehablab/PBC --out pbc/
      wbcgen download chehablab/PBC --out pbc-quick/ --split train --max-per-class 50
      wbcgen download me/wbc-synthetic --out cells/ --revision v1
      HF_HUB_OFFLINE=1 wbcgen download me/wbc-synthetic --out cells/
      wbcgen download me/wbc-dcgan --repo-type model --out gan/ && wbcgen sample --from gan/
      wbcgen download /tmp/repo --out cells/         # a local repo folder (e.g. push --dry-run)
    """
    from wbcgen.data import parse_mapping
    from wbcgen.hub import download

    opts = {"split": split, "config": config_name, "max_per_class": max_per_class,
            "label_map": parse_mapping([label_map] if label_map else [], "--label-map") or None,
            "aliases": parse_mapping(aliases, "--alias") or None, "image_column": image_column,
            "label_column": label_column}
    res = download(source, out, revision=revision, repo_type=repo_type, overwrite=overwrite,
                   progress=not as_json, **opts)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    counts = res.get("counts")
    detail = ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else f"{res['files']} files"
    click.echo(f"downloaded {source} to {out}: {detail}")
    if len(res.get("counts_by_split") or {}) > 1:
        click.echo("splits: " + "; ".join(f"{s.upper()}/ {sum(c.values())}" for s, c in res["counts_by_split"].items()))
    if res.get("skipped_labels"):
        click.echo("skipped, not one of wbcgen's five classes (map with --alias NAME=CLASS): "
                   + ", ".join(f"{k} {v}" for k, v in res["skipped_labels"].items()))
    if res.get("duplicates") or res.get("duplicate_conflicts"):
        also = res.get("duplicate_conflicts")
        click.echo(f"exact duplicates: {res['duplicates']} written once"
                   + (f", {also} also under another class/split" if also else ""))
    if res.get("n_unusable"):
        click.echo(f"unusable rows (no label or no PNG/JPEG/BMP/TIFF image): {res['n_unusable']} (see source.json)")
    if res.get("sampled_out"):
        click.echo(f"--max-per-class left out {res['sampled_out']} images")
    if res.get("provenance"):
        click.echo(f"licence: {res.get('license') or 'not stated in the card'}; provenance in {out}/SOURCE.md")


def register(group: click.Group) -> None:
    group.add_command(push_cmd)
    group.add_command(download_cmd)
