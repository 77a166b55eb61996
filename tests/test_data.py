"""Data layer: every layout, every preprocessing mode and every bad-input case, on real images."""
from __future__ import annotations

import csv
import collections
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from classifiers.runtime import UserError
from wbcgen.cli import main
from wbcgen.data import CLASSES, load_cells, load_splits, sample_data_path, save_splits, stratified_kfold
from wbcgen.data import decode as dec

LABEL_MAP = {"1": "neutrophil", "2": "lymphocyte", "3": "monocyte", "4": "eosinophil", "5": "basophil"}


def snapshot(root: Path) -> dict:
    """Every file under root with its size, mtime and content hash (to prove nothing was modified)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d) / f
            st = p.stat()
            out[os.fsencode(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def real_images(pbc_dir: Path, cls: str, n: int) -> list[Path]:
    return sorted((pbc_dir / cls).iterdir())[:n]


# ----------------------------------------------------------------------------- layouts


def test_pbc_inspect_matches_manifest(pbc_dir):
    with open(pbc_dir / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    expected = collections.Counter(r["label"] for r in rows)
    res = CliRunner().invoke(main, ["data", "inspect", str(pbc_dir), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["counts"] == {c: expected[c] for c in CLASSES}
    assert s["n_images"] == len(rows) == 3565
    assert s["skipped"] == [] and s["absent_classes"] == []
    assert set(s["image_sizes"]) == {"360x363", "366x369"}
    # duplicates are exactly the groups of manifest.csv rows sharing a sha256
    by_sha = collections.defaultdict(list)
    for r in rows:
        by_sha[r["sha256"]].append(r["file"])
    assert sorted(map(sorted, s["duplicates"])) == sorted(sorted(v) for v in by_sha.values() if len(v) > 1)


def test_pbc_manifest_hashes_and_shapes(pbc_dir):
    cells = load_cells(pbc_dir, progress=False)
    with open(pbc_dir / "manifest.csv") as f:
        want = {r["file"]: (r["sha256"], r["label"]) for r in csv.DictReader(f)}
    got = {m["path"]: (m["sha256"], m["label"]) for m in cells.manifest}
    assert got == want
    assert cells.images.dtype == torch.uint8 and cells.images.shape == (3565, 3, 128, 128)
    assert cells.labels.dtype == torch.int64
    assert [CLASSES[i] for i in cells.labels[:3].tolist()] == [cells.manifest[i]["label"] for i in range(3)]
    # paper crop: pixels match a manual crop + resize of the same file
    m = cells.manifest[0]
    im = Image.open(pbc_dir / m["path"]).convert("RGB")
    w, h = im.size
    ref = np.asarray(im.crop((80, 80, w - 80, h - 81)).resize((128, 128), Image.Resampling.BICUBIC))
    assert np.array_equal(cells.images[0].permute(1, 2, 0).numpy(), ref)


def test_zheng_csv_layout(zheng_dir):
    cells = load_cells(zheng_dir, label_map=LABEL_MAP, progress=False)
    want = collections.Counter()
    for n in (1, 2):
        with open(zheng_dir / f"Class Labels of Dataset {n}.csv", newline="", encoding="utf-8-sig") as f:
            want.update(LABEL_MAP[row[1].strip()] for row in list(csv.reader(f))[1:] if row)  # "class label" / "class"
    assert cells.preprocessing["layout"] == "csv"
    assert len(cells) == 400 and cells.counts() == {c: want[c] for c in CLASSES}
    assert cells.counts()["basophil"] == 4
    sizes = {tuple(m["orig_size"]) for m in cells.manifest}
    assert (120, 120) in sizes and (300, 300) in sizes and max(max(s) for s in sizes) == 300
    assert cells.images.shape[1:] == (3, 128, 128)
    first = next(m for m in cells.manifest if m["path"] == "Dataset 1/001.bmp")
    assert first["label"] == "lymphocyte"  # CSV row "1,2"


def test_zheng_numeric_labels_need_a_map(zheng_dir):
    with pytest.raises(UserError, match=r"label '\d' .*--label-map"):
        load_cells(zheng_dir, progress=False)
    res = CliRunner().invoke(main, ["data", "inspect", str(zheng_dir), "--label-map",
                                    "1=neutrophil,2=lymphocyte,3=monocyte,4=eosinophil,5=basophil", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["n_images"] == 400


def test_bccd_nested_splits_and_absent_class(bccd_dir):
    cells = load_cells(bccd_dir, progress=False)
    assert len(cells) == 1471
    assert cells.absent_classes() == ["basophil"]
    assert cells.present_classes() == ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
    splits = collections.Counter(m["path"].split("/")[1] for m in cells.manifest)
    assert splits == {"TRAIN": 1000, "TEST": 400, "TEST_SIMPLE": 71}
    res = CliRunner().invoke(main, ["data", "inspect", str(bccd_dir / "images" / "TEST")])
    assert res.exit_code == 0 and "basophil" in res.output and "(absent)" in res.output


def test_aliases_case_and_user_extension(tmp_path, pbc_dir):
    layout = {"NE": "neutrophil", "SNE": "neutrophil", "band": "neutrophil", "EOSINOPHILS": "eosinophil",
              "Baso": "basophil", "lymp": "lymphocyte", "Mono": "monocyte"}
    src = {"neutrophil": real_images(pbc_dir, "neutrophil", 3), "eosinophil": real_images(pbc_dir, "eosinophil", 1),
           "basophil": real_images(pbc_dir, "basophil", 1), "lymphocyte": real_images(pbc_dir, "lymphocyte", 1),
           "monocyte": real_images(pbc_dir, "monocyte", 1)}
    used = collections.Counter()
    for folder, cls in layout.items():
        d = tmp_path / "TRAIN" / folder
        d.mkdir(parents=True)
        shutil.copy(src[cls][used[cls] % len(src[cls])], d / f"{folder}.jpg")
        used[cls] += 1
    cells = load_cells(tmp_path, progress=False)
    assert cells.counts() == {"neutrophil": 3, "eosinophil": 1, "basophil": 1, "lymphocyte": 1, "monocyte": 1}
    (tmp_path / "TRAIN" / "IG").mkdir()
    shutil.copy(src["neutrophil"][0], tmp_path / "TRAIN" / "IG" / "ig.jpg")
    with pytest.raises(UserError, match=r"'IG' is not a known class.*--alias IG=CLASS.*--ignore-unknown"):
        load_cells(tmp_path, progress=False)
    assert len(load_cells(tmp_path, ignore_unknown=True, progress=False)) == 7
    assert load_cells(tmp_path, aliases={"IG": "neutrophil"}, progress=False).counts()["neutrophil"] == 4
    res = CliRunner().invoke(main, ["data", "inspect", str(tmp_path), "--alias", "ig=neutrophil", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["counts"]["neutrophil"] == 4
    res = CliRunner().invoke(main, ["data", "inspect", str(tmp_path), "--alias", "IG=platelet"])
    assert res.exit_code != 0 and "not one of" in res.output and "Traceback" not in res.output


def test_metadata_layout(tmp_path, pbc_dir):
    rows = []
    for cls in ("basophil", "monocyte"):
        (tmp_path / cls).mkdir()
        for p in real_images(pbc_dir, cls, 2):
            shutil.copy(p, tmp_path / cls / p.name)
            rows.append({"file_name": f"{cls}/{p.name}", "label": cls})
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["file_name", "label"])
        w.writeheader()
        w.writerows(rows)
    cells = load_cells(tmp_path, progress=False)
    assert cells.preprocessing["layout"] == "metadata"
    assert cells.counts()["basophil"] == 2 and cells.counts()["monocyte"] == 2 and len(cells) == 4


# ----------------------------------------------------------------------- preprocessing


def test_crop_modes_and_sizes(pbc_dir):
    p = real_images(pbc_dir, "monocyte", 1)[0]
    data = p.read_bytes()
    full = np.asarray(Image.open(p).convert("RGB"))
    none, wh = dec.decode(data, dec.parse_crop("none"), None)
    assert wh == (360, 363) and np.array_equal(none, full)
    paper, _ = dec.decode(data, dec.parse_crop("paper"), None)
    assert paper.shape == (363 - 161, 200, 3) and np.array_equal(paper, full[80:363 - 81, 80:280])
    center, _ = dec.decode(data, dec.parse_crop("center:100"), 64)
    assert center.shape == (64, 64, 3)
    auto, _ = dec.decode(data, dec.parse_crop("auto"), 50)
    assert np.array_equal(auto, dec.decode(data, dec.parse_crop("paper"), 50)[0])
    with pytest.raises(UserError, match="--crop"):
        dec.parse_crop("middle")
    with pytest.raises(dec.BadImage, match="paper crop"):
        dec.crop_box(120, 120, ("paper",))


def test_rgb_conversions(tmp_path, pbc_dir):
    im = Image.open(real_images(pbc_dir, "eosinophil", 1)[0]).convert("RGB")
    gray = im.convert("L")
    a16 = (np.asarray(gray).astype(np.uint16) * 257)
    variants = {
        "gray.png": gray, "rgba.png": im.convert("RGBA"), "palette.png": im.convert("P"),
        "cmyk.jpg": im.convert("CMYK"), "g16.png": Image.fromarray(a16),
    }
    d = tmp_path / "basophil"
    d.mkdir()
    for name, v in variants.items():
        v.save(d / name)
    cells = load_cells(tmp_path, crop="none", size=32, progress=False)
    assert len(cells) == 5 and cells.skipped == []
    by = {Path(m["path"]).name: i for i, m in enumerate(cells.manifest)}
    g, g16 = cells.images[by["gray.png"]], cells.images[by["g16.png"]]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # grey stays grey in RGB
    assert (g.int() - g16.int()).abs().max() <= 1  # 16-bit scaled to 8-bit, not clipped
    assert g16.float().mean() > 100  # clipping 16-bit values would give ~255 everywhere
    rgba = cells.images[by["rgba.png"]].float()
    assert (rgba - cells.images[by["palette.png"]].float()).abs().mean() < 12


# ------------------------------------------------------------------------- bad input


def make_bad_folder(root: Path, pbc_dir: Path) -> dict[str, str]:
    """A class folder of real images plus every kind of broken file; returns name → expected reason."""
    good = real_images(pbc_dir, "basophil", 3)
    d = root / "basophil"
    d.mkdir(parents=True)
    for p in good:
        shutil.copy(p, d / p.name)
    jpg = good[0].read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    buf = io.BytesIO()
    Image.open(good[1]).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    idat = png.index(b"IDAT")
    png[idat + 40: idat + 60] = b"\x00" * 20
    (d / "corrupt.png").write_bytes(bytes(png))
    (d / "notes.jpg").write_text("this is not an image\n")
    (d / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), (200, 100, 100)).save(d / "tiny.png")
    Image.new("1", (10_000, 10_000)).save(d / "bomb.png")  # 100 Mpx, a few kB on disk
    (d / "README.txt").write_text("lab notes")
    (root / "lymphocyte").mkdir()  # empty class folder
    weird = os.fsdecode(b"cell_\xff\xfe.jpg")  # not valid UTF-8
    shutil.copy(good[2], d / weird)
    return {"truncated.jpg": "truncated", "corrupt.png": "corrupt", "notes.jpg": "not a readable image",
            "empty.jpg": "empty file", "tiny.png": "only 1×1", "bomb.png": "decompression bomb",
            "README.txt": "not a readable image"}


def test_bad_inputs_are_skipped_with_reasons_and_input_untouched(tmp_path, pbc_dir):
    root = tmp_path / "data"
    expected = make_bad_folder(root, pbc_dir)
    before = snapshot(root)
    cells = load_cells(root, progress=False)
    assert snapshot(root) == before  # nothing modified, nothing added
    assert len(cells) == 4 and cells.counts()["basophil"] == 4  # 3 good + the non-UTF-8 name
    reasons = {Path(s["path"]).name: s["reason"] for s in cells.skipped}
    for name, why in expected.items():
        assert why in reasons[name], (name, reasons[name])
    assert any("empty class folder (lymphocyte)" in s["reason"] for s in cells.skipped)
    assert cells.absent_classes() == ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
    assert cells.present_classes() == ["basophil"]
    assert any("\ufffd" in m["path"] for m in cells.manifest)  # non-UTF-8 name shown with a replacement char
    res = CliRunner().invoke(main, ["data", "inspect", str(root), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert len(s["skipped"]) == len(expected) + 1 and snapshot(root) == before
    res = CliRunner().invoke(main, ["data", "inspect", str(root)])
    assert res.exit_code == 0 and "decompression bomb" in res.output and "Traceback" not in res.output


def test_missing_path_and_empty_folder_errors(tmp_path):
    res = CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        load_cells(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    assert len(load_cells(tmp_path / "empty", progress=False)) == 0


# ------------------------------------------------------------------- cache and splits


def test_cache_skips_decoding(tmp_path, pbc_small, monkeypatch):
    cache = tmp_path / "cache"
    first = load_cells(pbc_small, cache_dir=cache, progress=False)
    assert len(list(cache.glob("cells-*.safetensors"))) == 1

    def boom(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr("wbcgen.data.load.decode", boom)
    second = load_cells(pbc_small, cache_dir=cache, progress=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.manifest == second.manifest
    with pytest.raises(AssertionError, match="decoded"):
        load_cells(pbc_small, cache_dir=cache, size=64, progress=False)  # other settings → other key


def test_stratified_kfold_deterministic_and_reloadable(tmp_path):
    labels = torch.tensor([0] * 40 + [1] * 25 + [2] * 11 + [3] * 13 + [4] * 10)
    groups = [f"g{i}" for i in range(len(labels))]
    groups[1] = groups[0]  # an exact duplicate pair
    a = stratified_kfold(labels, 10, seed=3, groups=groups)
    b = stratified_kfold(labels, 10, seed=3, groups=groups)
    c = stratified_kfold(labels, 10, seed=4, groups=groups)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(not torch.equal(x[1], y[1]) for x, y in zip(a, c))
    tests = torch.cat([t for _, t in a])
    assert sorted(tests.tolist()) == list(range(len(labels)))  # disjoint and covering
    for tr, te in a:
        assert len(set(tr.tolist()) & set(te.tolist())) == 0
        per = torch.bincount(labels[te], minlength=5)
        assert ((per - torch.bincount(labels, minlength=5) / 10).abs() <= 1.01).all()  # stratified
        assert (0 in te.tolist()) == (1 in te.tolist())  # duplicates share a fold
    save_splits(tmp_path / "s.json", a, labels, 3)
    back = load_splits(tmp_path / "s.json", labels)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, back))
    with pytest.raises(UserError, match="different dataset"):
        load_splits(tmp_path / "s.json", labels[:-1])
    with pytest.raises(UserError, match="cannot be split into 5 folds"):
        stratified_kfold(torch.tensor([0, 1, 1]), 5)


def test_split_cli(tmp_path, pbc_small):
    out = tmp_path / "folds.json"
    res = CliRunner().invoke(main, ["data", "split", str(pbc_small), "--folds", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["kind"] == "wbcgen-split" and d["folds"] == 3 and d["data"]["n_images"] == 60
    assert all(e["parts"].count("test") == 1 for e in d["images"].values())   # each image tested once
    assert sorted(sum(sum(c["test"].values()) for c in d["counts"]) for _ in [0]) == [60]
    res = CliRunner().invoke(main, ["data", "split", str(pbc_small), "--folds", "3", "--out", str(out)])
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_embedded_sample_is_small_real_and_attributed():
    root = sample_data_path()
    cells = load_cells(None, progress=False)
    assert cells.counts() == {c: 30 for c in CLASSES}
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 3_000_000
    text = (root / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in text and "Acevedo" in text
    with open(root / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert {m["sha256"] for m in cells.manifest} == {r["sha256"] for r in rows}


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    from classifiers.runtime import atomic_write_json, save_checkpoint

    mask = os.umask(0)
    os.umask(mask)
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    save_checkpoint({"w": torch.ones(2)}, tmp_path / "c.safetensors")
    for f in ("r.json", "c.safetensors"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o666 & ~mask
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
