"""`wbcgen report` for an evaluation run, a classifier run and a GAN run: self-contained
HTML (every image inline and decodable, no external requests), and a render in headless
Chromium (screenshot not blank, no console messages, every image decoded)."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image, ImageStat

from evalkit import cli

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pbc_small, gan_work):
    """A GAN run, an evaluation run (all checks, dose, scored review) and its classifier run."""
    gan_root, syn = gan_work
    work = tmp_path_factory.mktemp("report_work")
    ev = work / "ev"
    cli("evaluate", "--allow-overlap", "--real", pbc_small, "--synthetic", syn, "--epochs", 1, "--checks", "all",
        "--dose", "0,1", "--splits", 2, "--review-n", 1, "--out", ev, "--quiet")
    key = list(csv.DictReader(open(ev / "review-kit" / "key.csv", encoding="utf-8")))
    with open(work / "answers.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "class", "source"])
        w.writeheader()
        w.writerows({"file_name": r["file_name"], "class": r["class"], "source": "synthetic"} for r in key)
    cli("review-score", work / "answers.csv", ev / "review-kit" / "key.csv", "--out", ev / "review-kit" / "score.json")
    gan = sorted((gan_root / "runs" / "gan" / "basophil").iterdir())[-1]
    return {"evaluation": ev, "classifier": ev / "train", "gan": gan, "real": pbc_small}


def _check_self_contained(html: str) -> int:
    """No external references; every inline image decodes. Returns the number of images."""
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html), "external src/href in the report"
    assert "url(http" not in html and "@import" not in html
    uris = re.findall(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"', html)
    for _, b64 in uris:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    return len(uris)


@pytest.mark.parametrize("kind", ["evaluation", "classifier", "gan"])
def test_report_is_self_contained(runs, kind, tmp_path):
    out = tmp_path / f"{kind}.html"
    real = ("--real", runs["real"]) if kind == "gan" else ()  # a GAN run's training images, found by sha256
    res = cli("report", runs[kind], "--out", out, *real)
    assert f"({kind} run)" in res.output
    html = out.read_text(encoding="utf-8")
    n_img = _check_self_contained(html)
    assert html.count("<svg") >= 1                                   # loss curves
    if kind == "evaluation":
        assert n_img >= 10                                           # real + synthetic grid per class
        for text in ("Real and synthetic cells, side by side", "paper Table 6", "paper Table 5", "Table 7",
                     "Distribution distances", "blind expert review", "Dose-response", "1,979", "98.7%"):
            assert text in html, text
        assert html.count('class="cm"') >= 6                         # ours + paper, tables 5, 6 and 8
        res = json.loads((runs["evaluation"] / "results.json").read_text())
        assert f"{100 * res['test']['accuracy']:.1f}%" in html
    elif kind == "classifier":
        assert "Test results" in html and 'class="cm"' in html and "training loss" in html
    else:
        assert n_img >= 2 and "real basophil" in html and "synthetic basophil" in html and "GAN losses" in html
    again = cli("report", runs[kind], "--out", out, ok=False)
    assert again.exit_code != 0 and "--overwrite" in again.output


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if exe:
        return exe
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "chromium"]):
            r = subprocess.run(cmd, capture_output=True, timeout=900, env=env)
            if cmd[1] == "install" and r.returncode == 0:
                break
        exe = shutil.which("chromium")
        if exe:
            return exe
    pytest.skip("Debian's chromium is not installed and could not be installed here "
                "(install it with: apt-get install -y chromium)")


def test_report_renders_in_headless_chromium(runs, tmp_path):
    exe = _chromium()
    page = tmp_path / "report.html"
    cli("report", runs["evaluation"], "--out", page)
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    r = subprocess.run([exe, *flags, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert shot.is_file(), f"no screenshot (exit {r.returncode}): {r.stderr[-2000:]}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    stat = ImageStat.Stat(img.convert("L"))
    assert stat.stddev[0] > 20, "screenshot is (nearly) blank"
    colours = img.resize((160, 300)).getcolors(maxcolors=100000)
    assert colours is not None and len(colours) > 50, "screenshot has almost no content"
    d = subprocess.run([exe, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    console = [ln for ln in (r.stderr + d.stderr).splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], "console messages:\n" + "\n".join(console)
    assert 'data-report-ok="yes"' in d.stdout, "an inline image failed to decode in Chromium"
    assert int(re.search(r'data-images="(\d+)"', d.stdout).group(1)) >= 10
