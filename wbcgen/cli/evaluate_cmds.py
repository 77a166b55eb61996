"""``wbcgen evaluate``, ``wbcgen review-kit``, ``wbcgen review-score`` and ``wbcgen report``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .common import split_options, user_errors

_LOAD = [
    click.option("--crop", default="auto", show_default=True, metavar="auto|paper|center:SIZE|cell|lab|none",
                 help="Border crop applied to every image folder before resizing."),
    click.option("--size", default=128, show_default=True, type=int, help="Square size every set is loaded at."),
    click.option("--cache-dir", default=None, metavar="DIR", help="Cache decoded tensors here."),
]


def _load_options(fn):
    for o in reversed(_LOAD):
        fn = o(fn)
    return fn


@click.command("evaluate")
@click.option("--train-on", type=click.Choice(["real", "synthetic", "mixed"]), default="synthetic", show_default=True,
              help="synthetic: train on synthetic, test on real (the paper's TSTR); real: train and test on real; "
                   "mixed: real training folds plus synthetic images, tested on held-out real.")
@click.option("--real", default=None, metavar="PATH",
              help="Real image folder or hf://USER/NAME[@REV]. Default: the embedded PBC sample.")
@click.option("--synthetic", default=None, metavar="PATH",
              help="Synthetic folder from `wbcgen sample`. Default: where `wbcgen sample` writes (runs/synthetic).")
@click.option("--test-on", default=None, metavar="PATH", help="Test on this real folder instead of CV/all real images.")
@split_options
@click.option("--model", default="wnet", show_default=True, metavar="NAME[,NAME…]",
              help="Classifier(s) to train (see train-classifier); several (e.g. wnet,wbcsnet) are trained on the same "
                   "splits and reported side by side (checks and --dose use the first).")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--recipe", default=None, metavar="NAME|FILE", help="Training recipe. Default: <model>-cpu.")
@click.option("--folds", type=int, default=None,
              help="K-fold CV over the real images. Default: the recipe's protocol (wnet-cpu: one 80/20 hold-out).")
@click.option("--mix-ratio", type=float, default=1.0, show_default=True,
              help="mixed: synthetic images per real training image, per class.")
@click.option("--real-per-class", type=int, default=None, help="Use at most N real training images per class.")
@click.option("--checks", default=None, metavar="LIST|all",
              help="Paper checks: classify-synthetic (1), tstr (2), cosine (3), review (4), fid (FID/KID + domain "
                   "Fréchet distance); comma list or 'all'.")
@click.option("--dose", default=None, metavar="R1,R2,…", help="Dose-response ratios, e.g. 0,0.5,1,2,4.")
@click.option("--classifier", default=None, metavar="RUN_DIR",
              help="Real-trained classifier run for checks 1/3/fid (default: train a W-Net on half the real set).")
@click.option("--inception-weights", default=None, metavar="FILE",
              help="FID Inception-v3 weights (pt_inception-2015-12-05 state dict). Default: torch hub cache if present.")
@click.option("--review-n", default=10, show_default=True, help="Images per class and source in the review kit.")
@click.option("--splits", default=20, show_default=True, help="Random half-splits behind distance intervals.")
@click.option("--out", "out", default=None, metavar="DIR", help="Output folder. Default: runs/evaluate/<train-on>.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: CUDA if present).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation in --out.")
@click.option("--allow-overlap", is_flag=True,
              help="Go on when test/validation images were in a generator's (or --classifier's) training data; "
                   "results.json, the report and the card then say so.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted evaluation in --out with the same arguments: finished stages are "
                   "kept, the interrupted one continues from its last epoch.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_load_options
@user_errors
def evaluate_cmd(train_on, real, synthetic, test_on, split_file, fold, model, epochs, recipe, folds, mix_ratio,
                 real_per_class, checks, dose, classifier, inception_weights, review_n, splits, out, seed, device, overwrite, allow_overlap,
                 resume, quiet, crop, size, cache_dir):
    """Are synthetic cells useful? Train a classifier on real, synthetic or mixed images,
    test on real ones, run the paper's checks and write results.json (+ `wbcgen report`).

    \b
    Examples:
      wbcgen evaluate --train-on synthetic                 # embedded sample vs `wbcgen sample` output
      wbcgen evaluate --train-on synthetic --real ../shared/data/pbc-dev --synthetic runs/synthetic --checks all
      wbcgen evaluate --train-on mixed --mix-ratio 2 --real-per-class 50 --real ../shared/data/pbc-dev
      wbcgen evaluate --train-on real --dose 0,0.5,1,2,4 --real-per-class 30 --real ../shared/data/pbc-dev
      wbcgen evaluate --train-on synthetic --real ../shared/data/pbc-dev --checks all --resume   # after Ctrl-C
      wbcgen evaluate --train-on synthetic --real ../shared/data/pbc-dev --split pbc-split.json  # its test part
      wbcgen evaluate --train-on synthetic --real ../shared/data/pbc-dev --split pbc-split.json --model wnet,wbcsnet
    """
    from wbcgen.evaluate import run_evaluation

    out = out or str(Path("runs") / "evaluate" / train_on)
    res = run_evaluation(train_on, real=real, synthetic=synthetic, test_on=test_on, model=model, recipe=recipe,
                         epochs=epochs, folds=folds, mix_ratio=mix_ratio, real_per_class=real_per_class,
                         checks=checks, dose=dose, classifier=classifier, inception_weights=inception_weights,
                         review_n=review_n, splits=splits, out_dir=out, seed=seed, overwrite=overwrite, resume=resume,
                         progress=not quiet, device=device,
                         load_kw={"crop": crop, "size": size, "cache_dir": cache_dir}, split=split_file, fold=fold,
                         allow_overlap=allow_overlap)
    t = res.get("test") or {}
    click.echo(f"train on {train_on}: {res['n_train_real']} real + {res['n_train_synthetic']} synthetic training "
               f"images; real-test accuracy {_pct(t.get('accuracy'))}, balanced {_pct(t.get('balanced_accuracy'))}")
    for j in (res.get("judges") or [])[1:]:
        click.echo(f"  {j['model']}: real-test accuracy {_pct(j['accuracy'])}, balanced {_pct(j['balanced_accuracy'])}")
    for n in res.get("notes", []):
        click.echo(f"note: {n}")
    click.echo(f"wrote {Path(out) / 'results.json'}  (HTML: wbcgen report {out})")


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


@click.command("review-kit")
@click.option("--real", default=None, metavar="PATH",
              help="Real image folder or hf://USER/NAME[@REV]. Default: the embedded PBC sample.")
@click.option("--synthetic", default=None, metavar="PATH", help="Synthetic folder. Default: runs/synthetic.")
@click.option("-n", "n", default=10, show_default=True, help="Real and synthetic images per class.")
@click.option("--out", "out", default="review-kit", show_default=True, metavar="DIR")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing kit in --out.")
@_load_options
@user_errors
def review_kit_cmd(real, synthetic, n, out, seed, overwrite, crop, size, cache_dir):
    """Write a blind-review kit: n real + n synthetic images per class, shuffled and
    renamed, a blank answer sheet and a separate hidden key (paper check 4, Table 8).

    \b
    Give DIR/reviewer/ to the expert; keep DIR/key.csv. Then:
      wbcgen review-kit --real ../shared/data/pbc-dev --synthetic runs/synthetic -n 10 --out kit
      wbcgen review-score kit/reviewer/answers.csv kit/key.csv
    """
    from classifiers.runtime import UserError, run_lock
    from wbcgen.data import load_cells
    from wbcgen.outputs import refuse_overlap, remove_stub
    from wbcgen.evaluate import default_synthetic_path
    from wbcgen.review import make_review_kit

    kw = {"crop": crop, "size": size, "cache_dir": cache_dir, "progress": False}
    syn = Path(synthetic) if synthetic else default_synthetic_path()
    if not syn.is_dir():
        raise UserError(f"no synthetic images at {syn}: run `wbcgen sample` first, or give --synthetic PATH")
    refuse_overlap(out, "--out", {"--real": real, "--synthetic": syn})
    existed = Path(out).exists()
    try:
        with run_lock(out):
            kit = make_review_kit(load_cells(real, **kw), load_cells(syn, **kw), n, out, seed=seed,
                                  overwrite=overwrite)
    except BaseException:
        remove_stub(Path(out), existed)
        raise
    info = json.loads((kit / "kit.json").read_text())
    click.echo(f"wrote {info['n_images']} images to {kit / 'reviewer'} (give this folder to the reviewer); "
               f"hidden key: {kit / 'key.csv'}")
    for note in info["notes"]:
        click.echo(f"note: {note}")


@click.command("review-score")
@click.argument("answers", type=click.Path(dir_okay=False))
@click.argument("key", type=click.Path(dir_okay=False))
@click.option("--out", "out", default=None, metavar="FILE", help="Also write the score as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the full score as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@user_errors
def review_score_cmd(answers, key, out, as_json, overwrite):
    """Score a filled answer sheet against the kit's key: accuracy (real / synthetic),
    per-class accuracy, confusion matrix, and how often real and synthetic were told apart.

    \b
    Example:
      wbcgen review-score kit/reviewer/answers.csv kit/key.csv --out kit/score.json
    """
    from wbcgen.review import format_score, score_review, write_score

    s = score_review(answers, key)
    if out:
        write_score(s, out, overwrite=overwrite, inputs=(answers, key))
    click.echo(json.dumps(s, indent=2) if as_json else format_score(s))


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", default=None, metavar="FILE", help="HTML file. Default: RUN_DIR/report.html.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@click.option("--real", default=None, metavar="FOLDER",
              help="GAN run: the folder holding its training images (found by sha256 from train_images.csv).")
@user_errors
def report_cmd(run_dir, out, overwrite, real):
    """One self-contained HTML page (images inline) for a GAN run, a classifier run or an
    evaluation run: sample grids, loss curves, confusion matrices, metric tables beside
    the paper's numbers.

    \b
    Examples:
      wbcgen report runs/evaluate/synthetic
      wbcgen report runs/gan/basophil/<run-id> --out basophil.html --real ../shared/data/pbc-dev
    """
    from wbcgen.report import detect_kind, write_report

    path = write_report(run_dir, out, overwrite=overwrite, real=real)
    click.echo(f"wrote {path} ({detect_kind(Path(run_dir))} run)")


def register(group: click.Group) -> None:
    for cmd in (evaluate_cmd, review_kit_cmd, review_score_cmd, report_cmd):
        group.add_command(cmd)
