"""``wbcgen demo``: the whole pipeline on the embedded sample, in one command."""
from __future__ import annotations

import time
from pathlib import Path

import click

from classifiers.runtime import UserError

from .common import user_errors


def run_demo(out: Path, *, gan_steps: int | None, n: int, epochs: int | None, seed: int, overwrite: bool,
             progress: bool = True, echo=print) -> dict:
    """split → train-gan (every class, train part) → sample → evaluate --train-on synthetic (test
    part) → report, on the embedded sample: the GANs never see the images the evaluation tests on."""
    from wbcgen.data import apply_split, load_cells, make_split, save_split
    from wbcgen.evaluate import run_evaluation
    from wbcgen.gan import sample_to_folder, train_gan
    from wbcgen.report import write_report

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} is not empty; pass --overwrite or choose another --out")
    t0 = time.perf_counter()
    cells = load_cells(None, progress=False)
    split = make_split(cells, test_fraction=0.3, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    save_split(out / "split.json", split)
    train = apply_split(cells, split, "train")
    runs = {}
    for cls in cells.classes:
        echo(f"[1/4] train-gan --cls {cls} --split split.json  ({train.counts()[cls]} training images)")
        runs[cls] = train_gan(train, cls, config=None, out_root=out, steps=gan_steps, seed=seed,
                              run_name="demo", overwrite=True, progress=progress)
    echo(f"[2/4] sample -n {n}")
    syn = sample_to_folder(runs, n, out / "synthetic", seed=seed, overwrite=True, progress=progress)
    echo("[3/4] evaluate --train-on synthetic")
    res = run_evaluation("synthetic", real=None, synthetic=syn, epochs=epochs, checks="classify-synthetic,cosine",
                         out_dir=out / "evaluate", seed=seed, overwrite=True, progress=progress, split=split)
    echo("[4/4] report")
    report = write_report(out / "evaluate", overwrite=True)
    return {"runs": runs, "synthetic": syn, "results": res, "report": report, "seconds": time.perf_counter() - t0}


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, metavar="DIR", help="Where every output goes.")
@click.option("--gan-steps", type=int, default=150, show_default=True, help="GAN steps per class and ensemble member (the default fast64x2 config: 2 members).")
@click.option("-n", "n", default=200, show_default=True, help="Synthetic images per class.")
@click.option("--epochs", type=int, default=10, show_default=True, help="W-Net epochs (wnet-cpu recipe otherwise).")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Reuse a non-empty --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def demo_cmd(out, gan_steps, n, epochs, seed, overwrite, quiet):
    """Run train-gan → sample → evaluate → report on the embedded PBC sample.

    A short, complete tour (tens of minutes on a 2-core CPU with the defaults); for real
    results train longer on your own data with the individual commands.

    \b
    Splits the sample 70/30 (OUT/split.json), trains one DCGAN per class (the default config) on the 21
    training images of that class, samples N images per class, trains W-Net on the
    synthetic cells and tests it on the 9 held-out real images per class the GANs never
    saw (the paper's "generative W-Net"), then writes an HTML report.

    \b
    Examples:
      wbcgen demo
      wbcgen demo --gan-steps 200 -n 100 --epochs 5 --out /tmp/demo
    """
    r = run_demo(Path(out), gan_steps=gan_steps, n=n, epochs=epochs, seed=seed, overwrite=overwrite,
                 progress=not quiet, echo=lambda m: click.echo(m, err=True))
    t = r["results"].get("test", {})
    click.echo(f"train on synthetic, test on real: accuracy {t.get('accuracy', float('nan')):.3f}, "
               f"balanced {t.get('balanced_accuracy', float('nan')):.3f}")
    click.echo(f"report: {r['report']}  ({r['seconds'] / 60:.1f} min)")


def register(group: click.Group) -> None:
    group.add_command(demo_cmd)
