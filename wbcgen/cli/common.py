"""Options and error handling shared by the command modules."""
from __future__ import annotations

import functools

import click

from classifiers.runtime import UserError, os_error_message


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def user_errors(fn):
    """Turn :class:`UserError` and every :class:`OSError` (read-only or full disk, name too long,
    a file where a folder should be, …) into a one-line click error; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise click.ClickException(one_line(e)) from None
        except OSError as e:
            raise click.ClickException(one_line(os_error_message(e))) from None

    return wrapper


def data_options(fn):
    """--data/--layout/--alias/--label-map/--ignore-unknown/--crop/--size/--cache-dir."""
    opts = [
        click.option("--data", "data", default=None, metavar="PATH",
                     help="Image folder (class folders, CSV-labelled or metadata.csv), or hf://USER/NAME[@REV] "
                          "(a Hub dataset, downloaded once). Default: the embedded PBC sample."),
        click.option("--layout", type=click.Choice(["auto", "folders", "csv", "metadata"]), default="auto",
                     show_default=True, help="How labels are stored."),
        click.option("--alias", "aliases", multiple=True, metavar="NAME=CLASS",
                     help="Extra folder-name alias, e.g. --alias GRAN=neutrophil (repeatable)."),
        click.option("--label-map", default=None, metavar="1=neutrophil,2=…",
                     help="Map CSV label values to classes."),
        click.option("--ignore-unknown", is_flag=True, help="Skip folders/labels that map to no class instead of failing."),
        click.option("--crop", default="auto", show_default=True, metavar="auto|paper|center:SIZE|cell|lab|none",
                     help="Border crop before resizing; 'paper' is the W-Net 80/81/80/80 crop; 'cell' finds the "
                          "stained cell and crops 1.8x its size around it (fallback: auto, noted in the manifest); "
                          "'lab' centres each cell in a square of 1.65x the median cell size of its lab (the set, "
                          "or each top folder holding several classes), keeping cell sizes within a lab."),
        click.option("--size", default=128, show_default=True, type=int, help="Square output size in pixels."),
        click.option("--cache-dir", default=None, metavar="DIR",
                     help="Cache decoded tensors here (keyed by the manifest hash)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def load_from_options(data, layout, aliases, label_map, ignore_unknown, crop, size, cache_dir, progress=True):
    from wbcgen.data import load_cells, parse_mapping

    return load_cells(
        data, layout=layout, aliases=parse_mapping(aliases, "--alias"),
        label_map=parse_mapping([label_map] if label_map else [], "--label-map"),
        ignore_unknown=ignore_unknown, crop=crop, size=size, cache_dir=cache_dir, progress=progress,
    )




def split_options(fn):
    """--split FILE / --fold K (a split file from `wbcgen data split`)."""
    fn = click.option("--fold", type=int, default=None, metavar="K",
                      help="Which fold of a --split file made with --folds (0-based).")(fn)
    return click.option("--split", "split_file", default=None, metavar="FILE",
                        help="A split file from `wbcgen data split`: train on its train part only "
                             "(evaluate: test on its test part).")(fn)


def split_part(cells, split_file, fold, part: str = "train"):
    """(cells of one part, split record for the run) — or (cells, None) without --split."""
    if split_file is None:
        if fold is not None:
            raise UserError("--fold needs --split FILE")
        return cells, None
    from wbcgen.data import apply_split, load_split, split_info

    split = load_split(split_file)
    sub = apply_split(cells, split, part, fold)
    if len(sub) == 0:
        raise UserError(f"the {part} part of {split_file} holds no images")
    return sub, split_info(split, split_file, fold, part)
