"""The generators' training lists travel through the Hub (issue 11): a pushed GAN carries
``<class>/train_images.csv``, a pushed synthetic set ``generation.json`` + ``train_images.csv``,
and a download (wbcgen layout, parquet, refs/convert/parquet, `sample --from REPO`) brings
them back, so `evaluate` on a downloaded set computes leakage instead of "unknown". Real
pbc-dev images and real (tiny) GANs; the Hub is faked offline as in test_hub."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from evalkit import cli
from test_hub import COMMIT, populate_cache, tree
from test_hub_parquet import write_shard

from classifiers.runtime import UserError
from wbcgen.data import CLASSES
from wbcgen.evaluate.leakage import generator_lists
from wbcgen.hub import download, push


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _runs(work: Path) -> dict[str, Path]:
    return {c: next((work / "runs" / "gan" / c).iterdir()) for c in CLASSES}


def _no_local_paths(repo: Path, *local: Path) -> None:
    """No text file of a repo layout names a local folder (the pytest temp root holds them all)."""
    base = os.path.commonpath([str(p) for p in local])
    for f in tree(repo):
        if f.endswith((".json", ".csv", ".md", ".html")):
            text = (repo / f).read_text(encoding="utf-8")
            assert base not in text, f"{f} names the local path {base}"


def _one_line(res, needle: str) -> None:
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and needle in res.output, res.output


@pytest.fixture(scope="module")
def test_folders(tmp_path_factory, pbc_dir, pbc_small):
    """(clean, leaky): 2 real pbc-dev images per class the gan_work GANs never saw; the same
    plus 3 they trained on (2 basophils, 1 monocyte)."""
    clean, leaky = tmp_path_factory.mktemp("clean"), tmp_path_factory.mktemp("leaky")
    for c in CLASSES:
        for root in (clean, leaky):
            (root / c).mkdir()
            for f in sorted((pbc_dir / c).iterdir())[12:14]:
                shutil.copy(f, root / c / f.name)
    for c, k in (("basophil", 2), ("monocyte", 1)):
        for f in sorted((pbc_small / c).iterdir())[:k]:
            shutil.copy(f, leaky / c / f.name)
    return clean, leaky


def test_gan_push_carries_training_lists_and_sample_from_repo_records_them(gan_work, pbc_small, tmp_path):
    work, _ = gan_work
    repo = tmp_path / "repo"
    push(work / "runs" / "gan", "me/wbc-gan", dry_run=True, to=repo, progress=False)
    manifest = json.loads((repo / "wbcgen.json").read_text())
    card = (repo / "README.md").read_text()
    for c, run in _runs(work).items():
        lines = (repo / c / "train_images.csv").read_text().splitlines()
        assert lines[0] == "sha256,label" and len(lines) == 13 and {ln.split(",")[1] for ln in lines[1:]} == {c}
        assert (repo / c / "train_images.csv").read_bytes() == (run / "generator" / "train_images.csv").read_bytes()
        digest = _sha(repo / c / "train_images.csv")
        assert manifest["sha256"][f"{c}/train_images.csv"] == digest
        assert f"| `{c}/` | 12 | `{digest}` |" in card and f"| {c} | `{run.name}` |" in card
    assert "training list: sha256 and label" in card
    _no_local_paths(repo, pbc_small, work, tmp_path)
    # sample --from the repo: generation.json records each generator's list (and its source)
    cli("sample", "-n", 2, "--from", repo, "--out", tmp_path / "syn", "--quiet")
    gen = json.loads((tmp_path / "syn" / "generation.json").read_text())
    for c in CLASSES:
        g = gen["generators"][c]
        assert g["train_images_sha256"] == _sha(repo / c / "train_images.csv") and g["n_train_images"] == 12
        assert g["data_source"] == "pbc" and g["license"] == "cc-by-4.0"
    lists, why = generator_lists(tmp_path / "syn")
    assert why is None and all(len(lists[c]) == 12 for c in CLASSES)
    # a list edited after the push is refused: by the manifest, and without it by the run's record
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    f = bad / "basophil" / "train_images.csv"
    f.write_text("\n".join(f.read_text().splitlines()[:-1]) + "\n")
    _one_line(cli("sample", "-n", 2, "--from", bad, "--out", tmp_path / "x", "--quiet", ok=False),
              "basophil/train_images.csv does not match its sha256 in wbcgen.json")
    (bad / "wbcgen.json").unlink()
    _one_line(cli("sample", "-n", 2, "--from", bad, "--out", tmp_path / "x", "--quiet", ok=False),
              "basophil/train_images.csv does not match the training list its run recorded")
    assert not (tmp_path / "x").exists()
    # push refuses a run whose generator/train_images.csv no longer matches the run's record
    run = tmp_path / "edited" / "basophil" / "r1"
    shutil.copytree(_runs(work)["basophil"], run, ignore=shutil.ignore_patterns("checkpoints", "samples"))
    lean = run / "generator" / "train_images.csv"
    lean.write_text("\n".join(lean.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(UserError, match="basophil generator .*does not match the train_images_sha256 its run "
                                        "recorded"):
        push(run, "me/edited", dry_run=True, to=tmp_path / "edited-repo", progress=False)


def test_pushed_set_downloads_with_its_lists_and_is_leakage_checked(gan_work, pbc_small, test_folders, tmp_path,
                                                                     monkeypatch):
    from datasets import load_dataset
    from huggingface_hub import constants

    work, syn = gan_work
    clean, leaky = test_folders
    repo = tmp_path / "repo"
    push(syn, "me/wbc-syn", dry_run=True, to=repo, progress=False)
    lines = (repo / "train_images.csv").read_text().splitlines()
    assert lines[0] == "generator,sha256,label" and len(lines) == 61
    assert (repo / "train_images.csv").read_bytes() == (syn / "train_images.csv").read_bytes()
    assert (repo / "generation.json").read_bytes() == (syn / "generation.json").read_bytes()
    manifest = json.loads((repo / "wbcgen.json").read_text())
    assert {"generation.json", "train_images.csv"} <= set(manifest["sha256"])
    card = (repo / "README.md").read_text()
    digest = json.loads((syn / "generation.json").read_text())["generators"]["basophil"]["train_images_sha256"]
    assert f"| basophil | 12 | `{digest}` |" in card and "leakage check" in card
    _no_local_paths(repo, pbc_small, work, tmp_path)
    edited = tmp_path / "edited-syn"
    shutil.copytree(syn, edited)
    (edited / "train_images.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserError, match="train_images.csv does not match generation.json for the monocyte"):
        push(edited, "me/edited", dry_run=True, to=tmp_path / "edited-repo", progress=False)
    assert len(load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "hf"))) == 60  # side files ignored
    # download from an offline Hub cache: the lists come back, evaluate computes the overlap
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    populate_cache(tmp_path / "hub", repo, "me/wbc-syn", "dataset")
    cells = tmp_path / "cells"
    download("me/wbc-syn", cells, cache_dir=tmp_path / "hub", progress=False)
    assert (cells / "train_images.csv").read_bytes() == (repo / "train_images.csv").read_bytes()
    args = ["evaluate", "--train-on", "synthetic", "--synthetic", cells, "--model", "wbcsnet", "--epochs", 1, "--quiet"]
    cli(*args, "--real", clean, "--out", tmp_path / "ev")
    r = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert r["leakage"]["n_overlap"] == 0 and r["leakage"]["generators"] == sorted(CLASSES)
    assert r["leakage"]["n_checked"] >= 10 and not any("leakage unknown" in n for n in r["notes"])
    _one_line(cli(*args, "--real", leaky, "--out", tmp_path / "ev2", ok=False),
              "3 test/validation image(s) (basophil 2, monocyte 1) were in the training data")
    # the same through --synthetic hf://… (downloaded into wbcgen's cache, then checked)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("WBCGEN_CACHE", str(tmp_path / "wbcgen-cache"))
    hf_args = [a if a is not cells else "hf://me/wbc-syn" for a in args]
    _one_line(cli(*hf_args, "--real", leaky, "--out", tmp_path / "ev4", ok=False),
              "3 test/validation image(s) (basophil 2, monocyte 1) were in the training data")
    # a list edited after the download is refused in one sentence
    f = cells / "train_images.csv"
    f.write_text("\n".join(ln for ln in f.read_text().splitlines() if ln != lines[30]) + "\n")
    _one_line(cli(*args, "--real", clean, "--out", tmp_path / "ev3", ok=False),
              "train_images.csv does not match generation.json for the")
    assert not (tmp_path / "ev3" / "results.json").exists()


def _parquet_repo(root: Path, syn: Path) -> Path:
    """The sampled set as a parquet dataset (image struct + string label) with its provenance files."""
    with open(syn / "metadata.csv", newline="") as f:
        rows = [((syn / r["file_name"]).read_bytes(), Path(r["file_name"]).name, r["label"]) for r in csv.DictReader(f)]
    write_shard(root / "data" / "train-00000-of-00001.parquet", rows)
    for name in ("generation.json", "train_images.csv"):
        shutil.copy(syn / name, root / name)
    return root


def test_parquet_download_keeps_the_lists_also_from_the_convert_branch(gan_work, tmp_path, monkeypatch):
    from huggingface_hub import constants

    _, syn = gan_work
    repo = _parquet_repo(tmp_path / "pq", syn)
    out = tmp_path / "out"
    res = download(repo, out, progress=False)
    assert list(res["counts"]) == list(CLASSES)  # (a 3-step GAN's images repeat: duplicates are written once)
    assert (out / "train_images.csv").read_bytes() == (syn / "train_images.csv").read_bytes()
    assert json.loads((out / "source.json").read_text())["training_lists"] == "this revision"
    lists, why = generator_lists(out)
    assert why is None and sorted(lists) == sorted(CLASSES) and all(len(v) == 12 for v in lists.values())
    # refs/convert/parquet holds only the shards: the lists come from the default branch
    cache = tmp_path / "hub"
    populate_cache(cache, repo, "me/syn-pq", "dataset")
    store, conv = cache / "datasets--me--syn-pq", "f" * 40
    link = store / "snapshots" / conv / "default" / "train" / "0000.parquet"
    link.parent.mkdir(parents=True)
    os.symlink(os.path.realpath(store / "snapshots" / COMMIT / "data" / "train-00000-of-00001.parquet"), link)
    (store / "refs" / "refs" / "convert").mkdir(parents=True)
    (store / "refs" / "refs" / "convert" / "parquet").write_text(conv)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    download("me/syn-pq", tmp_path / "conv", revision="refs/convert/parquet", cache_dir=cache, progress=False)
    assert json.loads((tmp_path / "conv" / "source.json").read_text())["training_lists"] == "default branch"
    assert generator_lists(tmp_path / "conv")[0] == lists
    # a list that does not match generation.json: refused, nothing written
    (repo / "train_images.csv").write_text("generator,sha256,label\nbasophil," + "0" * 64 + ",basophil\n")
    with pytest.raises(UserError, match="does not match generation.json for the basophil generator"):
        download(repo, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_tiff_images_round_trip_download_push_download(pbc_dir, tmp_path):
    """The parquet download writes TIFF as .tif; push and the next download accept them (one suffix set)."""
    import io

    from PIL import Image

    from wbcgen.hub.layout import IMAGE_SUFFIXES, SAFE_PATTERNS
    from wbcgen.hub.released import FOLDER_IMAGES, MAGIC

    assert FOLDER_IMAGES is IMAGE_SUFFIXES and {ext for _, ext, _ in MAGIC} <= set(IMAGE_SUFFIXES)
    assert {"*.tif", "*.TIFF"} <= set(SAFE_PATTERNS)
    rows = []
    for c in CLASSES:
        for f in sorted((pbc_dir / c).iterdir())[:2]:
            buf = io.BytesIO()
            Image.open(f).convert("RGB").resize((64, 64)).save(buf, format="TIFF")
            rows.append((buf.getvalue(), f.stem + ".tif", c))
    write_shard(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet", rows)
    first = tmp_path / "first"
    download(tmp_path / "pq", first, progress=False)
    tifs = sorted(p.relative_to(first).as_posix() for p in first.rglob("*.tif"))
    assert len(tifs) == 10
    repo = tmp_path / "repo"
    push(first, "me/tiff-cells", dry_run=True, to=repo, data_source="pbc", progress=False)
    assert sorted(f for f in tree(repo) if f.endswith(".tif")) == tifs
    assert "**/*.tif" in (repo / "README.md").read_text()  # the card's data_files load them with `datasets`
    again = tmp_path / "again"
    download(repo, again, progress=False)
    assert {_sha(again / f) for f in tifs} == {_sha(first / f) for f in tifs}


def test_run_made_before_provenance_is_pushed_without_its_local_path(gan_work, pbc_small, tmp_path):
    """An older run's config named its data folder: the pushed run_config.json keeps the basename
    (the run folder itself is not changed, also when push hard-links its files)."""
    from wbcgen.hub import build

    work, _ = gan_work
    run = tmp_path / "old" / "monocyte" / "r1"
    shutil.copytree(_runs(work)["monocyte"], run, ignore=shutil.ignore_patterns("checkpoints", "samples"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["source"] = str(pbc_small)
    (run / "config.json").write_text(json.dumps(cfg))
    before = (run / "config.json").read_bytes()
    dest = tmp_path / "staged"
    dest.mkdir()
    build(run, dest, repo_id="me/old", link=True, progress=False)
    pushed = json.loads((dest / "monocyte" / "run_config.json").read_text())
    assert pushed["data"]["source"] == pbc_small.name and pushed["data"]["name"] == cfg["data"]["name"]
    assert (run / "config.json").read_bytes() == before
    manifest = json.loads((dest / "wbcgen.json").read_text())
    assert manifest["sha256"]["monocyte/run_config.json"] == _sha(dest / "monocyte" / "run_config.json")
    _no_local_paths(dest, pbc_small, work, tmp_path)
