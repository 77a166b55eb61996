"""`wbcgen report` of a GAN run shows the run's own real training cells: config.json names the
training folder by basename only, so they are found by sha256 (train_images.csv) in the folder
given with --real — never silently swapped for the embedded sample."""
from __future__ import annotations

import base64
import html as _html
import json
import shutil

import torch

from evalkit import chdir, cli


def _run(gan_work):
    gan_root, _ = gan_work
    return sorted((gan_root / "runs" / "gan" / "basophil").iterdir())[-1]


def test_gan_report_shows_the_runs_training_cells(gan_work, pbc_small, tmp_path):
    from wbcgen.data import load_cells
    from wbcgen.evaluate.pictures import grid_png
    from wbcgen.report.runs import real_images

    run = _run(gan_work)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["name"] == pbc_small.name and "path" not in cfg["data"]  # a basename, no local path
    cells, caption = real_images(run, cfg, "basophil", pbc_small)
    truth = load_cells(pbc_small, progress=False).of_class("basophil")
    assert len(cells) == 12 and {m["sha256"] for m in cells.manifest} == {m["sha256"] for m in truth.manifest}
    assert caption == (f"real basophil: 12 of the run's 12 training images, found in {pbc_small.name} "
                       "by sha256 (train_images.csv)")
    out = tmp_path / "gan.html"
    cli("report", run, "--real", pbc_small, "--out", out)
    html = out.read_text(encoding="utf-8")
    assert _html.escape(caption) in html
    # the grid in the page is exactly pbc_small's basophils (seeded draw of 16 → all 12)
    want = grid_png(truth.images[torch.randperm(12, generator=torch.Generator().manual_seed(0))])
    assert base64.b64encode(want).decode() in html


def test_gan_report_without_the_folder_says_so(gan_work, pbc_dir, tmp_path):
    run = _run(gan_work)
    with chdir(tmp_path):  # no folder named like the training data here
        cli("report", run, "--out", tmp_path / "a.html")
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "real images not shown: the run names its training folder by name only" in html
    assert "--real FOLDER" in html and "embedded PBC sample" not in html
    # a folder of other basophils (none the run trained on) is not passed off as its training cells
    other = tmp_path / "other" / "basophil"
    other.mkdir(parents=True)
    for f in sorted((pbc_dir / "basophil").iterdir())[12:15]:
        shutil.copy(f, other / f.name)
    cli("report", run, "--real", other.parent, "--out", tmp_path / "b.html")
    assert "none of the run&#x27;s 12 training images is in other" in (tmp_path / "b.html").read_text(encoding="utf-8")
    bad = cli("report", run, "--real", tmp_path / "missing", "--out", tmp_path / "c.html", ok=False)
    assert bad.exit_code != 0 and "is not a folder" in bad.output
