"""Never lose a user's data (issue 10): run names, --overwrite, locks, whole-or-nothing outputs,
failed starts, and one sentence (never a traceback) for OS errors and bad flags.

Every refusal is checked the same way (:func:`refused`): exit code 1, exactly one line of
output, no traceback; and every file under the test's folder (inputs and anything beside
--out) keeps its sha256 (:func:`snapshot`). Real pbc-dev images, tiny GANs of a few steps.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from classifiers.runtime import LOCK_NAME, UserError, load_checkpoint, run_lock
from wbcgen.cli import main

STEPS = 2


def snapshot(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file below ``root`` (hidden ones too)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d) / f
            if not p.is_symlink():
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def images(snap: dict[str, str]) -> dict[str, str]:
    """The images and metadata.csv of a sample dataset (provenance files may hold times)."""
    return {k: v for k, v in snap.items() if k.endswith((".png", "metadata.csv"))}


def cli(*args, ok: bool = True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"wbcgen {' '.join(map(str, args))} failed:\n{res.output}"
    return res


def refused(*args, says: str | tuple = ()) -> str:
    """Run a command that must fail with one clear sentence; return that sentence."""
    res = cli(*args, ok=False)
    # progress bars and training warnings (stderr) are not the message; the message is one line
    lines = [ln for ln in re.split(r"[\r\n]", res.output)
             if ln.strip() and not re.search(r"\d+%\|", ln) and not ln.startswith("warning: ")]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for word in (says,) if isinstance(says, str) else says:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory, pbc_dir):
    """A scratch folder with real images (two classes), a tiny basophil GAN run and a sample."""
    root = tmp_path_factory.mktemp("safety")
    data = root / "my-images"
    for cls in ("basophil", "eosinophil"):
        (data / cls).mkdir(parents=True)
        for f in sorted((pbc_dir / cls).iterdir())[:8]:
            shutil.copy(f, data / cls / f.name)
    runs = root / "runs"
    cli("train-gan", "--cls", "basophil", "--data", data, "--config", "tiny", "--steps", STEPS, "--out", runs,
        "--name", "r1", "--quiet", "--threads", "1")
    synth = root / "synth"
    cli("sample", "-n", 4, "--from", runs, "--out", synth, "--quiet", "--batch-size", 4)
    return root, data, runs / "gan" / "basophil" / "r1", synth


# ----------------------------------------------------------------------------- 1-4: data loss


def test_run_name_is_one_plain_folder_name(world, tmp_path):
    root, data, run, _ = world
    before = snapshot(root)
    for name in (str(data), str(data / "basophil"), "../x", "../../../x", "a/b", "..", ".hidden"):
        refused("train-gan", "--cls", "basophil", "--data", data, "--config", "tiny", "--steps", 1, "--out",
                root / "runs", "--name", name, "--overwrite", says="plain folder name")
    assert snapshot(root) == before and not (root / "x").exists()


def test_overwrite_replaces_only_a_gan_run(world, tmp_path):
    _, data, _, _ = world
    out = tmp_path / "out"
    mine = out / "gan" / "basophil" / "keep"
    mine.mkdir(parents=True)
    (mine / "thesis.txt").write_text("years of work")
    before = snapshot(tmp_path)
    msg = refused("train-gan", "--cls", "basophil", "--data", data, "--config", "tiny", "--steps", 1,
                  "--out", out, "--name", "keep", "--overwrite", says="not a wbcgen GAN run")
    assert "--overwrite" not in msg and snapshot(tmp_path) == before
    # the training images inside the would-be run folder are an input: refused, even though it is "a name"
    inner = out / "gan" / "basophil" / "imgs"
    shutil.copytree(data, inner)
    before = snapshot(tmp_path)
    refused("train-gan", "--cls", "basophil", "--data", inner, "--config", "tiny", "--steps", 1, "--out", out,
            "--name", "imgs", "--overwrite", says="input --data")
    assert snapshot(tmp_path) == before


def test_push_and_download_never_replace_their_source(world, tmp_path):
    root, _, run, synth = world
    before = snapshot(root)
    for to in (synth, synth.parent):
        refused("push", synth, "--repo-id", "me/x", "--dry-run", "--to", to, "--overwrite", says="input RUN_DIR")
        refused("download", synth, "--out", to, "--overwrite", says="input source")
    refused("push", run, "--repo-id", "me/x", "--dry-run", "--to", run / "generator", "--overwrite",
            says="lies inside")
    assert snapshot(root) == before
    # a folder that wbcgen did not write is left alone, and --overwrite is not suggested
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for flag in ((), ("--overwrite",)):
        msg = refused("download", synth, "--out", tmp_path / "busy", *flag, says="left alone")
        assert "--overwrite" not in msg
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    # an earlier download is ours: replaced with --overwrite (lock and marker never become data);
    # the temp folder of a killed download is removed by the next one
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".dl.wbcgen-tmp-{dead.pid}" / "basophil").mkdir(parents=True)
    cli("download", synth, "--out", tmp_path / "dl")
    assert not list(tmp_path.glob(".dl.*"))
    refused("download", synth, "--out", tmp_path / "dl", says="--overwrite")
    cli("download", synth, "--out", tmp_path / "dl", "--overwrite")
    assert not (tmp_path / "dl" / LOCK_NAME).exists() and not list(tmp_path.glob(".dl.*"))
    cli("push", tmp_path / "dl", "--repo-id", "me/x", "--dry-run", "--to", tmp_path / "repo", "--data-source", "pbc")
    assert not [p for p in (tmp_path / "repo").rglob(".*")]
    assert snapshot(root) == before


def test_sample_overwrite_never_deletes_real_images(world, tmp_path):
    root, data, run, synth = world
    runs = root / "runs"
    before = snapshot(root)
    for args in (("--out", data), ("--out", data, "--overwrite")):
        msg = refused("sample", "-n", 2, "--from", runs, *args, "--quiet", says="left alone")
        assert "--overwrite" not in msg
    refused("sample", "-n", 2, "--from", runs, "--out", runs, "--overwrite", "--quiet", says="contains the input")
    refused("sample", "-n", 2, "--from", run, "--out", run, "--overwrite", "--quiet", says="is the input")
    assert snapshot(root) == before
    # our own dataset plus a file we did not write: left alone
    own = tmp_path / "own"
    shutil.copytree(synth, own)
    (own / "basophil" / "real_cell.jpg").write_bytes((data / "basophil").iterdir().__next__().read_bytes())
    snap = snapshot(tmp_path)
    refused("sample", "-n", 2, "--from", runs, "--out", own, "--overwrite", "--quiet", says="not listed")
    assert snapshot(tmp_path) == snap
    # a clean earlier sample is replaced (only with --overwrite), the result equals a fresh one
    (own / "basophil" / "real_cell.jpg").unlink()
    refused("sample", "-n", 4, "--from", runs, "--out", own, "--quiet", "--batch-size", 4, says="--overwrite")
    cli("sample", "-n", 4, "--from", runs, "--out", own, "--overwrite", "--quiet", "--batch-size", 4)
    assert images(snapshot(own)) == images(snapshot(synth))


def test_metadata_paths_stay_inside_the_dataset(world, tmp_path):
    from wbcgen.data import load_cells

    _, data, _, _ = world
    ds = tmp_path / "ds"
    (ds / "basophil").mkdir(parents=True)
    imgs = sorted((data / "basophil").iterdir())
    shutil.copy(imgs[0], ds / "basophil" / "a.jpg")
    (tmp_path / "outside").mkdir()
    shutil.copy(imgs[1], tmp_path / "outside" / "x.jpg")
    os.symlink(tmp_path / "outside" / "x.jpg", ds / "basophil" / "link.jpg")
    rows = ["basophil/a.jpg", "../outside/x.jpg", "../../../../etc/passwd", "/etc/passwd",
            str(tmp_path / "outside" / "x.jpg"), "basophil/link.jpg"]
    (ds / "metadata.csv").write_text("file_name,label\n" + "".join(f"{r},basophil\n" for r in rows))
    before = snapshot(tmp_path)
    cells = load_cells(ds, progress=False)
    assert len(cells) == 1 and cells.manifest[0]["path"] == "basophil/a.jpg"
    reasons = [s["reason"] for s in cells.skipped]
    assert sum("'..'" in r for r in reasons) == 2 and sum("absolute" in r for r in reasons) == 2
    assert sum("outside the dataset folder (symlink)" in r for r in reasons) == 1
    res = cli("data", "inspect", ds)
    assert "Traceback" not in res.output
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------ 5-7: locks, whole or nothing


def test_run_lock_unit(tmp_path):
    d = tmp_path / "run"
    with run_lock(d, "test") as lock:
        info = json.loads(lock.read_text())
        assert info["pid"] == os.getpid() and info["command"] == "test"
        with run_lock(d):  # re-entrant in one process
            pass
        assert lock.exists()
    assert not (d / LOCK_NAME).exists()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (d / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                               "command": "wbcgen sample"}))
        with pytest.raises(UserError, match=f"in use by process {sleeper.pid} \\(wbcgen sample\\)"):
            with run_lock(d):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(d):  # the holder is dead now: its stale lock is taken over
        assert json.loads((d / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_locked_run_and_output_refuse_a_second_writer(world, tmp_path):
    root, data, run, synth = world
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for folder in (run, tmp_path / "s"):
            folder.mkdir(exist_ok=True)
            (folder / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                        "command": "wbcgen other"}))
        before = snapshot(root)
        refused("train-gan", "--cls", "basophil", "--data", data, "--out", root / "runs", "--resume", "--steps",
                STEPS + 1, "--quiet", says=f"in use by process {sleeper.pid}")
        refused("sample", "-n", 2, "--from", run, "--out", tmp_path / "s", "--quiet", says=str(sleeper.pid))
        assert snapshot(root) == before
    finally:
        sleeper.kill()
        sleeper.wait()
        (run / LOCK_NAME).unlink()
    cli("sample", "-n", 2, "--from", run, "--out", tmp_path / "s", "--quiet")  # stale lock taken over
    assert not (tmp_path / "s" / LOCK_NAME).exists() and (tmp_path / "s" / "metadata.csv").is_file()


def test_sample_is_whole_or_nothing(world, tmp_path, monkeypatch):
    import wbcgen.gan.sample as sm

    root, _, run, _ = world
    out = tmp_path / "cells"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".cells.wbcgen-tmp-{dead.pid}"  # what a kill -9 leaves
    (stale / "basophil").mkdir(parents=True)
    calls = []

    def interrupted(images, folder, names, workers=2):
        calls.append(folder)
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(sm, "write_pngs", interrupted)
    res = cli("sample", "-n", 3, "--from", run, "--out", out, "--quiet", ok=False)
    assert res.exit_code == 1 and "Aborted" in res.output
    assert calls and not out.exists() and not stale.exists() and not list(tmp_path.glob(".cells*"))
    monkeypatch.undo()
    cli("sample", "-n", 3, "--from", run, "--out", out, "--quiet")
    first = snapshot(out)
    cli("sample", "-n", 3, "--from", run, "--out", out, "--quiet", "--overwrite")
    assert snapshot(out) == first and sorted(images(first)) == [
        "basophil/basophil_000000.png", "basophil/basophil_000001.png", "basophil/basophil_000002.png", "metadata.csv"]


def test_failed_starts_leave_no_stub(world, tmp_path):
    root, data, _, _ = world
    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"not safetensors")
    out = tmp_path / "clf"
    base = ("train-classifier", "--model", "dclnn", "--data", data, "--epochs", 1, "--quiet", "--out", out)
    refused(*base, "--init-from", tmp_path / "missing", says="nothing exists there")
    refused(*base, "--init-from", bogus, says="could not read weights")
    refused(*base, "--device", "banana", says="banana")
    refused(*base, "--batch-size", 100_000_000, says="GiB")
    assert not out.exists()
    gan = ("train-gan", "--cls", "basophil", "--data", data, "--config", "tiny", "--steps", 1, "--out", tmp_path / "g",
           "--quiet")
    refused(*gan, "--device", "banana", says="banana")
    refused(*gan, "--batch-size", 100_000_000, says="GiB")
    refused("sample", "-n", 2, "--from", root / "runs", "--out", tmp_path / "s", "--batch-size", 100_000_000,
            says="GiB")
    assert not (tmp_path / "g").exists() and not (tmp_path / "s").exists()


# -------------------------------------------------------------------------- 8-11: one sentence


def test_os_errors_are_one_sentence(world, tmp_path, monkeypatch):
    import wbcgen.gan.sample as sm
    import wbcgen.gan.train as gt

    root, data, run, synth = world
    (tmp_path / "afile").write_text("x")
    refused("train-gan", "--cls", "basophil", "--data", data, "--config", "tiny", "--steps", 1, "--out",
            tmp_path / "g", "--cache-dir", tmp_path / "afile", "--quiet", says=("afile",))
    refused("sample", "-n", 2, "--from", run, "--out", tmp_path / ("n" * 300), "--quiet", says="too long")
    refused("review-kit", "--real", data, "--synthetic", synth, "--out", tmp_path / "afile" / "kit",
            says="not a folder")
    refused("report", run, "--out", tmp_path / "afile" / "r.html", says="afile")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "checkpoints" / "latest.safetensors"))

    latest = run / "checkpoints" / "latest.safetensors"
    before = snapshot(root)
    monkeypatch.setattr(gt, "save_checkpoint", full)
    refused("train-gan", "--cls", "basophil", "--data", data, "--out", root / "runs", "--resume", "--steps",
            STEPS + 1, "--quiet", says=("disk is full", "latest.safetensors"))
    assert snapshot(root)["runs/gan/basophil/r1/checkpoints/latest.safetensors"] == before[
        "runs/gan/basophil/r1/checkpoints/latest.safetensors"]
    load_checkpoint(latest)  # still a good checkpoint

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "ro"))

    monkeypatch.setattr(sm, "write_pngs", read_only)
    refused("sample", "-n", 2, "--from", run, "--out", tmp_path / "ro", "--quiet", says="read-only")
    assert not (tmp_path / "ro").exists()


def test_bad_device_is_one_sentence(world, tmp_path):
    import torch

    _, data, run, _ = world
    if not torch.cuda.is_available():
        refused("sample", "-n", 2, "--from", run, "--out", tmp_path / "s", "--device", "cuda", says="--device cpu")
        refused("train-gan", "--cls", "basophil", "--data", data, "--device", "cuda", "--out", tmp_path / "g",
                says="GPU")
    refused("sample", "-n", 2, "--from", run, "--out", tmp_path / "s", "--device", "banana", says="banana")
    refused("evaluate", "--train-on", "real", "--real", data, "--device", "banana", "--out", tmp_path / "e",
            says="banana")
    assert not any(tmp_path.iterdir())


def test_tampered_checkpoint_metadata_is_one_sentence(world, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    root, data, run, _ = world
    work = tmp_path / "runs" / "gan" / "basophil" / "r1"
    shutil.copytree(run, work)
    ck = work / "checkpoints" / "latest.safetensors"
    with safe_open(str(ck), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tree = json.loads(meta["tree"])
    for what, edit in (("data", lambda d: [kv for kv in d if kv[0] != "data"]),
                       ("rng", lambda d: [[k, {"__dict__": [["python", "garbage"]]} if k == "rng" else v]
                                          for k, v in d])):
        save_file(tensors, str(ck), metadata={**meta, "tree": json.dumps({"__dict__": edit(tree["__dict__"])})})
        before = snapshot(tmp_path)
        refused("train-gan", "--cls", "basophil", "--data", data, "--out", tmp_path / "runs", "--resume",
                "--steps", STEPS + 1, "--quiet", says=("checkpoint", "latest.safetensors"))
        assert snapshot(tmp_path) == before, what


# --------------------------------------------------------------------------------- 12: smaller


def test_smaller_items(world, tmp_path):
    from wbcgen.hub.errors import explain

    root, data, run, synth = world
    before = snapshot(root)
    refused("train-gan", "--cls", "basophil", "--data", data, "--out", root / "runs", "--resume", "--steps", 1,
            "--quiet", says=f"already trained {STEPS} steps")
    base = ("train-classifier", "--model", "dclnn", "--data", data, "--epochs", 1, "--quiet", "--out", tmp_path / "c")
    refused(*base, "--splits", tmp_path / "none.json", says="does not exist")
    refused(*base, "--splits", tmp_path / "none.json", "--protocol", "holdout", says="cannot be combined")
    refused("evaluate", "--real", data, "--synthetic", synth, "--checks", "cosine", "--classifier", run,
            "--out", tmp_path / "ev", says="not a finished classifier run")
    assert not (tmp_path / "ev").exists() and not (tmp_path / "c").exists()
    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copy(run / "generator" / "model.safetensors", gen)
    (gen / "config.json").write_text("{not json")
    refused("sample", "-n", 2, "--from", gen, "--out", tmp_path / "s", says="not valid JSON")
    assert snapshot(root) == before

    class OfflineModeIsEnabled(Exception):
        pass

    msg = str(explain(OfflineModeIsEnabled(), repo_id="me/x", action="push to"))
    assert "upload" in msg and "download" not in msg


def test_review_score_detects_swapped_files(world, tmp_path):
    _, data, _, synth = world
    kit = tmp_path / "kit"
    cli("review-kit", "--real", data, "--synthetic", synth, "-n", 2, "--out", kit)
    sheet = kit / "reviewer" / "answers.csv"
    rows = sheet.read_text().splitlines()
    sheet.write_text("\n".join([rows[0]] + [r.replace(",,", ",basophil,", 1) for r in rows[1:]]) + "\n")
    right = cli("review-score", sheet, kit / "key.csv", "--json").output
    swapped = cli("review-score", kit / "key.csv", sheet, "--json").output
    assert json.loads(right) == json.loads(swapped) and json.loads(right)["accuracy"] < 1.0
    msg = refused("review-kit", "--real", data, "--synthetic", synth, "-n", 2, "--out", data, "--overwrite",
                  says="input --real")
    assert "--overwrite" not in msg


def test_other_commands_replace_only_their_own_output(world, tmp_path):
    root, data, run, synth = world
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)                # a user's folder that happens to have a "train/"
    (foreign / "train" / "cell.jpg").write_bytes(next((data / "basophil").iterdir()).read_bytes())
    (foreign / "config.json").write_text('{"mine": true}')
    (foreign / "log.jsonl").write_text("{}\n")
    notes = tmp_path / "notes"                             # a user's folder with nothing a classifier run writes
    notes.mkdir()
    (notes / "todo.txt").write_text("count the basophils\n")
    kit = tmp_path / "kit"
    cli("review-kit", "--real", data, "--synthetic", synth, "-n", 1, "--out", kit)
    before, world_before = snapshot(tmp_path), snapshot(root)
    msg = refused("evaluate", "--train-on", "real", "--real", data, "--out", foreign, "--overwrite", "--quiet",
                  says="not a wbcgen evaluation")
    assert "--overwrite" not in msg
    refused("train-classifier", "--model", "dclnn", "--data", data, "--epochs", 1, "--quiet", "--out", foreign,
            "--overwrite", says="not a classifier run")
    refused("train-classifier", "--model", "dclnn", "--data", data, "--epochs", 1, "--quiet", "--out", run,
            "--overwrite", says="not a classifier run")
    refused("train-classifier", "--model", "dclnn", "--data", data, "--epochs", 1, "--quiet", "--out", notes,
            says="holds todo.txt")
    refused("review-kit", "--real", data, "--synthetic", synth, "-n", 1, "--out", foreign, "--overwrite",
            says="not a wbcgen review kit")
    refused("report", run, "--out", foreign / "train" / "cell.jpg", "--overwrite", says="not an HTML file")
    refused("review-score", kit / "reviewer" / "answers.csv", kit / "key.csv", "--out", kit / "key.csv",
            "--overwrite", says="input files")
    assert snapshot(tmp_path) == before and snapshot(root) == world_before
