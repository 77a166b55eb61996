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
@click.option("--test-fraction", type=float, default=None,
              help="Fraction of every class held out for testing (default 0.2; not with --folds).")
@click.option("--val-fraction", type=float, default=0.0, show_default=True,
              help="Fraction of every class for validation (early stopping); with --per-class N: of N.")
@click.option("--per-class", type=int, default=None, metavar="N",
              help="Keep only N training images per class (the scarce-data set); the rest is 'unused'.")
@click.option("--folds", type=int, default=None, metavar="K",
              help="K stratified folds instead of one hold-out: fold k tests on its own images.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing split file.")
@data_options
@user_errors
def split_cmd(path, test_fraction, val_fraction, per_class, folds, seed, out, overwrite, data, **opts):
    """Write a stratified train/val/test split keyed by image sha256 (exact duplicates
    always on one side). train-gan, train-classifier and evaluate take it as --split FILE.

    \b
    Examples:
      wbcgen data split ../shared/data/pbc-dev --test-fraction 0.2 --seed 0 --out pbc-split.json
      wbcgen data split ../shared/data/pbc-dev --per-class 30 --folds 5 --seed 0 --out pbc-30.json
    """
    from classifiers.runtime import UserError
    from wbcgen.data import make_split, save_split

    if folds is not None and test_fraction is not None:
        raise UserError("--folds makes every fold a test set; drop --test-fraction")
    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    cells = load_from_options(path or data, **opts)
    split = make_split(cells, test_fraction=0.2 if test_fraction is None else test_fraction,
                       val_fraction=val_fraction, per_class=per_class, folds=folds, seed=seed)
    save_split(out, split)
    for note in split["notes"]:
        click.echo(f"note: {note}", err=True)
    c = split["counts"][0]
    what = f"{folds} folds" if folds else "one split"
    click.echo(f"wrote {what} over {len(cells)} images to {out}: " + ", ".join(
        f"{p} {sum(c[p].values())}" for p in ("train", "val", "test", "unused") if sum(c[p].values()))
        + (" (fold 0)" if folds else ""))


def register(group: click.Group) -> None:
    group.add_command(data_group)
