"""`wbcgen sample` removes the per-class temp folders (`.<class>.XXXXXXXX`) an interrupted older
`wbcgen sample` left inside --out — only those, and only when they hold nothing but that class's
PNGs; a look-alike holding a user file survives (and the folder is refused, naming it)."""
from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from evalkit import cli


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, pbc_dir):
    root = tmp_path_factory.mktemp("legacy")
    data = root / "cells"
    (data / "basophil").mkdir(parents=True)
    for f in sorted((pbc_dir / "basophil").iterdir())[:8]:
        shutil.copy(f, data / "basophil" / f.name)
    cli("train-gan", "--cls", "basophil", "--data", data, "--config", "tiny", "--steps", 2, "--out", root / "runs",
        "--name", "r1", "--quiet", "--threads", "1")
    return root / "runs" / "gan" / "basophil" / "r1"


def _png_of(real_jpeg) -> bytes:
    buf = io.BytesIO()
    Image.open(real_jpeg).convert("RGB").resize((128, 128)).save(buf, "PNG")
    return buf.getvalue()


def test_stale_old_temp_folders_go_lookalikes_stay(gan_run, pbc_dir, tmp_path):
    from classifiers.runtime import UserError
    from wbcgen.outputs import clean_legacy_temps

    real = sorted((pbc_dir / "basophil").iterdir())
    out = tmp_path / "synth"
    cli("sample", "-n", 2, "--from", gan_run, "--out", out, "--quiet")
    stale = out / ".basophil.k3x_9qz1"  # what an older sample's Ctrl-C left: some PNGs, one cut short
    stale.mkdir()
    (stale / "basophil_000000.png").write_bytes(_png_of(real[0]))
    (stale / "basophil_000001.png").write_bytes(_png_of(real[1])[:100])
    (stale / "basophil_000002.png").write_bytes(b"")
    cli("sample", "-n", 2, "--from", gan_run, "--out", out, "--quiet", "--overwrite")
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".wbcgen")) == [
        "basophil", "generation.json", "metadata.csv", "train_images.csv"]

    # an interrupted older first run: nothing in --out but its temp folder (no --overwrite needed)
    first = tmp_path / "first"
    (first / ".eosinophil.a1b2c3d4").mkdir(parents=True)
    (first / ".eosinophil.a1b2c3d4" / "eosinophil_000000.png").write_bytes(_png_of(real[4]))
    cli("sample", "-n", 1, "--from", gan_run, "--out", first, "--quiet")
    assert not (first / ".eosinophil.a1b2c3d4").exists() and (first / "basophil" / "basophil_000000.png").is_file()

    # look-alikes: a user file inside, a wrong class name, a subfolder, a non-PNG with the right name
    user = out / ".basophil.abcd1234"
    user.mkdir()
    (user / "basophil_000000.png").write_bytes(_png_of(real[2]))
    (user / "notes.txt").write_text("my counts")
    other = [out / ".platelet.abcd1234", out / ".monocyte.abcd12345", out / ".monocyte.zzzz9999"]
    for d in other:
        (d / "sub").mkdir(parents=True)
    (out / ".monocyte.zzzz9999" / "sub").rmdir()
    (out / ".monocyte.zzzz9999" / "monocyte_000000.png").write_bytes(real[3].read_bytes())  # a JPEG
    assert clean_legacy_temps(out) == []
    res = cli("sample", "-n", 2, "--from", gan_run, "--out", out, "--quiet", "--overwrite", ok=False)
    assert res.exit_code == 1 and ".basophil.abcd1234" in res.output and "left alone" in res.output
    assert (user / "notes.txt").read_text() == "my counts" and (user / "basophil_000000.png").is_file()
    assert all(d.exists() for d in other)
    # the rule on its own: only the matching, own-content folder goes
    (user / "notes.txt").unlink()
    assert clean_legacy_temps(out) == [user] and all(d.exists() for d in other)
    with pytest.raises(UserError):
        from wbcgen.gan.sample import _check_replaceable

        _check_replaceable(out, True)  # the remaining look-alikes still block --overwrite
