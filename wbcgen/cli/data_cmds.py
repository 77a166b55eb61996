"""``wbcgen data inspect`` and ``wbcgen data split``."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import click

from .common import data_options, load_from_options, user_errors


def summarise(cells) -> dict:
    sizes = collections.Counter(f"{w}x{h}" for w, h in (m["orig_size"] for m in cells.manifest))
    return {
        "source": cells.source,
        "layout": cells.preprocessing.get("layout"),
        "n_images": len(cells),
        "counts": cells.counts(),
        "absent_classes": cells.absent_classes(),
        "image_sizes": dict(sizes.most_common()),
        "preprocessing": cells.preprocessing,
        "skipped": cells.skipped,
        "duplicates": cells.duplicates,
        "manifest_sha256": cells.manifest_hash(),
    }


@click.group("data")
def data_group() -> None:
    """Inspect and split WBC image folders."""


@data_group.command("inspect")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@data_options
@user_errors
def inspect_cmd(path, as_json, data, **opts):
    """Per-class counts, image sizes, skipped files (with reasons) and duplicates.

    \b
    Examples:
      wbcgen data inspect ../shared/data/pbc-dev --json
      wbcgen data inspect "../shared/data/zheng2018" --label-map 1=neutrophil,2=lymphocyte,3=monocyte,4=eosinophil,5=basophil
      wbcgen data inspect ../shared/data/bccd-aug
    """
    cells = load_from_options(path or data, progress=not as_json, **opts)
    s = summarise(cells)
    if as_json:
        click.echo(json.dumps(s, indent=2, ensure_ascii=True))
        return
    click.echo(f"{s['source']}  ({s['layout']} layout, {s['n_images']} images)")
    for cls, n in s["counts"].items():
        click.echo(f"  {cls:<11} {n:>6}" + ("   (absent)" if n == 0 else ""))
    click.echo("image sizes: " + ", ".join(f"{k} ×{v}" for k, v in list(s["image_sizes"].items())[:6]))
    if s["absent_classes"]:
        click.echo(f"absent classes: {', '.join(s['absent_classes'])}")
    click.echo(f"skipped: {len(s['skipped'])}")
    for sk in s["skipped"]:
        click.echo(f"  {sk['path']}: {sk['reason']}")
    click.echo(f"duplicate groups: {len(s['duplicates'])}")
    for group in s["duplicates"]:
        click.echo("  " + "  ==  ".join(group))


@data_group.command("split")
@click.argument("path", required=False)
@click.option("--folds", default=10, show_default=True, help="Number of stratified folds.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing splits file.")
@data_options
@user_errors
def split_cmd(path, folds, seed, out, overwrite, data, **opts):
    """Write deterministic stratified k-fold splits (exact duplicates kept in one fold).

    \b
    Example:
      wbcgen data split ../shared/data/pbc-dev --folds 10 --seed 0 --out pbc-folds.json
    """
    from wbcgen.data import save_splits, stratified_kfold

    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    cells = load_from_options(path or data, **opts)
    splits = stratified_kfold(cells.labels, folds, seed, groups=[m["sha256"] for m in cells.manifest])
    save_splits(out, splits, cells.labels, seed)
    click.echo(f"wrote {folds} folds over {len(cells)} images to {out}")


def register(group: click.Group) -> None:
    group.add_command(data_group)
