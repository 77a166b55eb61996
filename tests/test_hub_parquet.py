"""`wbcgen download` of released parquet / ImageFolder datasets, and `--data hf://`.

The repos are built here with pyarrow exactly as the Hub stores them (``datasets.push_to_hub``:
``data/<split>-NNNNN-of-NNNNN.parquet``, an ``image`` struct<bytes, path> column, an int
``label`` with ClassLabel names in the card's ``dataset_info``, the ``huggingface`` schema
metadata; the parquet converter's ``refs/convert/parquet`` ``<config>/<split>/NNNN.parquet``),
filled with real pbc-dev JPEG bytes, and served from a local folder and from an offline
Hub cache. No network."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from classifiers.runtime import UserError
from test_hub import COMMIT, populate_cache
from wbcgen.cli import main
from wbcgen.data import CLASSES, load_cells
from wbcgen.hub import download

ROOT = Path(__file__).resolve().parents[1]
#: PBC's eight classes in the order its ClassLabel uses (alphabetical).
PBC_NAMES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
TRAIN = {"neutrophil": 10, "eosinophil": 3, "basophil": 3, "lymphocyte": 3, "monocyte": 3}
EXTRA = {"ig": 3, "erythroblast": 1, "platelet": 2}          # train rows of classes wbcgen skips
CITATION = ("Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J. A dataset of microscopic "
            "peripheral blood cell images. Data in Brief 30 (2020) 105474.")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def card(features: list, configs: list | None = None, licence: str = "cc-by-4.0") -> str:
    meta = {"license": licence, "task_categories": ["image-classification"],
            "dataset_info": {"features": features, "splits": [{"name": "train"}, {"name": "test"}]}}
    if configs:
        meta["configs"] = configs
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# PBC\n\nPeripheral blood cells.\n\n"
            f"## Citation\n\n{CITATION}\n\n## Licence\n\nCC BY 4.0\n")


IMAGE_FEATURE = {"name": "image", "dtype": "image"}
LABEL_FEATURE = {"name": "label", "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(PBC_NAMES)}}}}
HF_FEATURES = {"image": {"_type": "Image"}, "label": {"names": PBC_NAMES, "_type": "ClassLabel"}}
HF_META = {b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()}


def write_shard(path: Path, rows: list[tuple[bytes, str | None, object]], *, checksum: bool = False,
                binary_image: str | None = None, label_col: str = "label") -> None:
    """rows = (image bytes, original path, label) → one parquet shard with small row groups."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [r[2] for r in rows]
    lab_type = pa.int64() if all(isinstance(x, int) for x in labels) else pa.string()
    if binary_image:
        table = pa.table({binary_image: pa.array([r[0] for r in rows], pa.binary()),
                          label_col: pa.array(labels, lab_type)})
    else:
        img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        table = pa.table({"image": pa.array([{"bytes": r[0], "path": r[1]} for r in rows], img_type),
                          label_col: pa.array(labels, lab_type)})
        if lab_type == pa.int64():
            table = table.replace_schema_metadata(HF_META)
    pq.write_table(table, path, row_group_size=4, write_page_checksum=checksum)


@pytest.fixture(scope="module")
def pbc_bytes(pbc_dir) -> dict[str, list[tuple[bytes, str]]]:
    """Real pbc-dev JPEG bytes: per wbcgen class, then 'other' images used for PBC's extra classes."""
    out = {}
    for c in CLASSES:
        files = sorted((pbc_dir / c).iterdir())[:TRAIN[c] + 1]
        out[c] = [(f.read_bytes(), f.name) for f in files]
    out["other"] = [(f.read_bytes(), f.name) for f in sorted((pbc_dir / "lymphocyte").iterdir())[20:20 + 8]]
    return out


@pytest.fixture(scope="module")
def pbc_repo(tmp_path_factory, pbc_bytes) -> tuple[Path, dict]:
    """A `datasets.push_to_hub`-style repo: two train shards, one test shard, card with ClassLabel
    names; one duplicate row, one text 'image', one unlabelled (-1) row. Returns (repo, expected)."""
    repo = tmp_path_factory.mktemp("pbc-parquet")
    idx = {n: i for i, n in enumerate(PBC_NAMES)}
    train, test, expect = [], [], {"train": {}, "test": {}}
    for c in CLASSES:
        rows = pbc_bytes[c]
        train += [(b, n, idx[c]) for b, n in rows[:TRAIN[c]]]
        test.append((rows[-1][0], rows[-1][1], idx[c]))
        expect["train"][c] = {sha(b) for b, _ in rows[:TRAIN[c]]}
        expect["test"][c] = {sha(rows[-1][0])}
    others = iter(pbc_bytes["other"])
    for name, n in EXTRA.items():
        train += [(*next(others), idx[name]) for _ in range(n)]
    test.append((*next(others), idx["ig"]))
    train.append((pbc_bytes["neutrophil"][0][0], "copy.jpg", idx["neutrophil"]))     # exact duplicate
    train.append((b"this is not an image", "notes.jpg", idx["monocyte"]))            # fails the magic number
    train.append((pbc_bytes["other"][-1][0], "x.jpg", -1))                             # no label
    half = len(train) // 2
    write_shard(repo / "data" / "train-00000-of-00002.parquet", train[:half])
    write_shard(repo / "data" / "train-00001-of-00002.parquet", train[half:], checksum=True)
    write_shard(repo / "data" / "test-00000-of-00001.parquet", test)
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"},
                                                         {"split": "test", "path": "data/test-*"}]}]
    (repo / "README.md").write_text(card([IMAGE_FEATURE, LABEL_FEATURE], configs), encoding="utf-8")
    (repo / "loader.py").write_text("raise SystemExit('never run')\n")                  # a loading script: ignored
    return repo, expect


def check_images(out: Path, expected: dict[str, set[str]], prefix: str = "") -> None:
    """Every listed file is the original bytes under its sha256 name, and the set per class is exact."""
    rows = [r for r in csv.DictReader(open(out / "metadata.csv", encoding="utf-8"))
            if r["file_name"].startswith(prefix)]
    got: dict[str, set[str]] = {}
    for r in rows:
        data = (out / r["file_name"]).read_bytes()
        assert sha(data) == r["sha256"] == Path(r["file_name"]).stem and Path(r["file_name"]).suffix == ".jpg"
        assert Path(r["file_name"]).parent.name == r["label"]
        got.setdefault(r["label"], set()).add(r["sha256"])
    assert got == {c: s for c, s in expected.items() if s}


# --------------------------------------------------------------------------------- tests


def test_parquet_repo_from_local_folder(pbc_repo, tmp_path):
    repo, expect = pbc_repo
    out = tmp_path / "pbc"
    res = CliRunner().invoke(main, ["download", str(repo), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "neutrophil 11, eosinophil 4, basophil 4, lymphocyte 4, monocyte 4" in res.output
    assert "skipped, not one of wbcgen's five classes" in res.output
    assert "ig 4, platelet 2, erythroblast 1" in res.output
    assert "exact duplicates: 1 written once" in res.output and "unusable rows" in res.output
    assert "licence: cc-by-4.0" in res.output and "TRAIN/ 22; TEST/ 5" in res.output
    files = tree(out)
    assert "metadata.csv" in files and "SOURCE.md" in files and "source.json" in files
    assert not any(f.endswith((".py", ".parquet")) for f in files)
    assert {f.split("/")[0] for f in files if "/" in f} == {"TRAIN", "TEST"}
    check_images(out, expect["train"], "TRAIN/")
    check_images(out, expect["test"], "TEST/")
    prov = json.loads((out / "source.json").read_text())
    assert prov["skipped_labels"] == {"ig": 4, "platelet": 2, "erythroblast": 1}
    assert prov["counts_by_split"] == {"train": TRAIN, "test": {c: 1 for c in CLASSES}}
    assert prov["duplicates"] == 1 and prov["n_unusable"] == 2 and prov["found_by"] == "card data_files"
    assert sorted(u["reason"] for u in prov["unusable"]) == ["no label (-1)", "not a PNG/JPEG/BMP/TIFF (magic number)"]
    assert prov["image_column"] == "image" and prov["label_column"] == "label" and prov["class_names"] == PBC_NAMES
    assert prov["license"] == "cc-by-4.0" and prov["citation"].startswith("Acevedo A.")
    assert [s["rows"] for s in prov["shards"]] == [15, 16, 6]
    source_md = (out / "SOURCE.md").read_text()
    assert "cc-by-4.0" in source_md and CITATION in source_md and "ig 4" in source_md
    cells = load_cells(out, progress=False)
    assert cells.counts() == {c: TRAIN[c] + 1 for c in CLASSES} and not cells.skipped and not cells.duplicates
    inspect = CliRunner().invoke(main, ["data", "inspect", str(out), "--json"])
    assert inspect.exit_code == 0, inspect.output
    summary = json.loads(inspect.output)
    assert summary["layout"] == "metadata" and summary["counts"] == cells.counts() and summary["skipped"] == []


def test_split_sample_and_mapping_options(pbc_repo, tmp_path):
    repo, expect = pbc_repo
    got = download(repo, tmp_path / "train", split="train", progress=False)
    assert got["splits"] == ["train"] and got["counts"] == TRAIN
    assert all(f.split("/")[0] in CLASSES for f in tree(tmp_path / "train") if "/" in f)   # one split: flat
    check_images(tmp_path / "train", expect["train"])
    a = download(repo, tmp_path / "s1", split="train", max_per_class=2, progress=False)
    b = download(repo, tmp_path / "s2", split="train", max_per_class=2, progress=False)
    assert a["counts"] == b["counts"] == {c: 2 for c in CLASSES} and tree(tmp_path / "s1") == tree(tmp_path / "s2")
    check_images(tmp_path / "s1", {c: set(sorted(s)[:2]) for c, s in expect["train"].items()})  # smallest sha256
    assert a["sampled_out"] == sum(TRAIN.values()) - 10
    # PBC's 'ig' folded into neutrophil by index (--label-map) or by name (--alias)
    for opts in ({"label_map": {"3": "neutrophil"}}, {"aliases": {"ig": "neutrophil"}}):
        m = download(repo, tmp_path / f"m{len(os.listdir(tmp_path))}", split="test", progress=False, **opts)
        assert m["counts"]["neutrophil"] == 2 and "ig" not in m["skipped_labels"]
    with pytest.raises(UserError, match="has the split.*train, test"):
        download(repo, tmp_path / "v", split="validation", progress=False)
    with pytest.raises(UserError, match="'pixels' is not a column"):
        download(repo, tmp_path / "v", image_column="pixels", progress=False)
    assert not (tmp_path / "v").exists()


def test_string_labels_binary_column_and_extra_class(pbc_bytes, tmp_path):
    repo = tmp_path / "repo"
    names = {"neutrophil": "NEUTROPHIL", "eosinophil": "eosinophil", "basophil": "Basophil",
             "lymphocyte": "lymphocyte", "monocyte": "mono"}
    rows = [(b, None, names[c]) for c in CLASSES for b, _ in pbc_bytes[c][:2]]
    rows += [(pbc_bytes["neutrophil"][2][0], None, "SNE"), (pbc_bytes["neutrophil"][3][0], None, "BNE"),
             (pbc_bytes["neutrophil"][4][0], None, "neut")]
    rows += [(b, None, "platelet") for b, _ in pbc_bytes["other"][:3]]
    rows.append((pbc_bytes["other"][4][0][:600], None, "lymphocyte"))   # JPEG magic, truncated data
    write_shard(repo / "train.parquet", rows, binary_image="img", label_col="cell_type")
    (repo / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# WBC\n", encoding="utf-8")
    got = download(repo, tmp_path / "out", progress=False)
    assert got["counts"] == {"neutrophil": 5, "eosinophil": 2, "basophil": 2, "lymphocyte": 2, "monocyte": 2}
    assert got["skipped_labels"] == {"platelet": 3} and got["license"] == "cc-by-nc-4.0"
    prov = json.loads((tmp_path / "out" / "source.json").read_text())
    assert (prov["image_column"], prov["label_column"], prov["class_names"]) == ("img", "cell_type", None)
    assert prov["label_mapping"]["SNE"] == "neutrophil" and prov["label_mapping"]["platelet"] is None
    assert prov["n_unusable"] == 1 and prov["unusable"][0]["reason"].startswith("not a decodable JPEG")
    assert prov["unusable"][0]["source"] == "train.parquet#16"
    with pytest.raises(UserError, match="labels seen: platelet \\(3\\). Map them with --alias NAME=CLASS"):
        _only_platelets(repo, tmp_path)
    assert not (tmp_path / "none").exists()


def test_card_split_names_cannot_escape_the_output(pbc_bytes, tmp_path):
    repo = tmp_path / "repo"
    write_shard(repo / "data" / "a.parquet", [(b, n, "neutrophil") for b, n in pbc_bytes["neutrophil"][:2]])
    write_shard(repo / "data" / "b.parquet", [(b, n, "eosinophil") for b, n in pbc_bytes["eosinophil"][:2]])
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/a.parquet"},
                                                         {"split": "../../evil", "path": "data/b.parquet"}]}]
    (repo / "README.md").write_text(card([IMAGE_FEATURE], configs), encoding="utf-8")
    with pytest.raises(UserError, match="split named '../../evil'"):
        download(repo, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    got = download(repo, tmp_path / "out", split="train", progress=False)       # the sane split alone is fine
    assert got["counts"] == {"neutrophil": 2}


def _only_platelets(repo: Path, tmp_path: Path):
    t = pq.read_table(repo / "train.parquet").filter(pa.compute.equal(pa.compute.field("cell_type"), "platelet"))
    only = tmp_path / "only"
    only.mkdir()
    pq.write_table(t, only / "train.parquet")
    return download(only, tmp_path / "none", progress=False)


def test_imagefolder_repo_not_written_by_wbcgen(pbc_dir, tmp_path):
    repo = tmp_path / "repo"
    for split, folder_names in (("train", ["Neutrophil", "EOS", "ig"]), ("test", ["Neutrophil", "EOS"])):
        for name, cls in zip(folder_names, ["neutrophil", "eosinophil", "lymphocyte"]):
            (repo / split / name).mkdir(parents=True)
            for f in sorted((pbc_dir / cls).iterdir())[:3 if split == "train" else 1]:
                shutil.copy(f, repo / split / name / f.name)
    (repo / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n", encoding="utf-8")
    got = download(repo, tmp_path / "out", progress=False)
    assert got["layout"] == "imagefolder" and got["counts"] == {"neutrophil": 4, "eosinophil": 4}
    assert got["skipped_labels"] == {"ig": 3} and got["counts_by_split"]["test"] == {"neutrophil": 1, "eosinophil": 1}
    src = {hashlib.sha256(p.read_bytes()).hexdigest() for p in repo.rglob("*.jpg") if p.parent.name != "ig"}
    rows = list(csv.DictReader(open(tmp_path / "out" / "metadata.csv")))
    assert {r["sha256"] for r in rows} == src and all(r["file_name"].startswith(("TRAIN/", "TEST/")) for r in rows)
    assert load_cells(tmp_path / "out", progress=False).counts()["eosinophil"] == 4


def test_corrupt_shard_leaves_nothing(pbc_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(pbc_repo[0], repo)
    second = repo / "data" / "train-00001-of-00002.parquet"
    good = second.read_bytes()
    second.write_bytes(good[: len(good) // 2])                            # truncated: no footer
    with pytest.raises(UserError, match="train-00001-of-00002.parquet is not a readable parquet file"):
        download(repo, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    data = bytearray(good)                                                # a flipped byte in a data page:
    data[len(data) // 3] ^= 0xFF                                          # found by the page CRC mid-stream,
    second.write_bytes(bytes(data))                                       # after the first shard was written
    with pytest.raises(UserError, match="train-00001-of-00002.parquet is corrupt at row"):
        download(repo, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# ------------------------------------------------------------------ offline Hub cache, hf://


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, pbc_repo) -> Path:
    """The PBC-style repo in an offline Hub cache at main, plus the parquet converter's branch
    (refs/convert/parquet: default/train/0000.parquet …, no card; names only in the schema metadata)."""
    cache = tmp_path_factory.mktemp("hub")
    populate_cache(cache, pbc_repo[0], "me/pbc-parquet", "dataset")
    conv = tmp_path_factory.mktemp("convert")
    for i, f in enumerate(sorted((pbc_repo[0] / "data").glob("train-*.parquet"))):
        (conv / "default" / "train").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, conv / "default" / "train" / f"{i:04d}.parquet")
    (conv / "default" / "test").mkdir()
    shutil.copy(pbc_repo[0] / "data" / "test-00000-of-00001.parquet", conv / "default" / "test" / "0000.parquet")
    store = cache / "datasets--me--pbc-parquet"
    convert_commit = "f" * 40
    for f in tree(conv):
        blob = store / "blobs" / sha((conv / f).read_bytes())
        shutil.copyfile(conv / f, blob)
        link = store / "snapshots" / convert_commit / f
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (store / "refs" / "refs" / "convert").mkdir(parents=True)
    (store / "refs" / "refs" / "convert" / "parquet").write_text(convert_commit)
    return cache


@pytest.fixture()
def offline(monkeypatch, hub_cache, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("WBCGEN_CACHE", str(tmp_path / "wbcgen-cache"))
    return hub_cache


def test_download_from_offline_hub_cache_and_convert_branch(pbc_repo, offline, tmp_path):
    repo, expect = pbc_repo
    got = download("me/pbc-parquet", tmp_path / "pbc", progress=False)
    assert got["counts_by_split"] == {"train": TRAIN, "test": {c: 1 for c in CLASSES}}
    check_images(tmp_path / "pbc", expect["train"], "TRAIN/")
    prov = json.loads((tmp_path / "pbc" / "source.json").read_text())
    assert prov["repo_id"] == "me/pbc-parquet" and prov["commit"] == COMMIT and prov["license"] == "cc-by-4.0"
    conv = download("me/pbc-parquet", tmp_path / "conv", revision="refs/convert/parquet", split="train",
                    progress=False)
    assert conv["counts"] == TRAIN and conv["skipped_labels"] == {"ig": 3, "platelet": 2, "erythroblast": 1}
    prov = json.loads((tmp_path / "conv" / "source.json").read_text())
    assert prov["found_by"] == "refs/convert/parquet layout" and prov["config"] == "default"
    assert prov["class_names"] == PBC_NAMES and prov["commit"] == "f" * 40       # names from the schema metadata
    assert prov["license"] == "cc-by-4.0" and prov["citation"].startswith("Acevedo")  # card from main
    check_images(tmp_path / "conv", expect["train"])


def test_hf_uri_trains_a_tiny_gan_and_is_read_offline_afterwards(pbc_repo, offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["train-gan", "--cls", "neutrophil", "--data", "hf://me/pbc-parquet",
                                    "--config", "tiny", "--steps", "2", "--out", "runs", "--quiet"])
    assert res.exit_code == 0, res.output
    local = tmp_path / "wbcgen-cache" / "hf" / "me--pbc-parquet@main"
    assert (local / "metadata.csv").is_file() and (local / "SOURCE.md").is_file()
    run = next((tmp_path / "runs" / "gan" / "neutrophil").iterdir())
    assert (run / "generator" / "model.safetensors").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert str(local) in json.dumps(cfg)                                   # the run records the local copy
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # no Hub cache: still readable
    cells = load_cells("hf://me/pbc-parquet", progress=False)
    assert cells.counts() == {c: TRAIN[c] + 1 for c in CLASSES}
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        load_cells("hf://me/pbc-parquet@v2", progress=False)
    with pytest.raises(UserError, match="not a Hub dataset address"):
        load_cells("hf://nothing", progress=False)


def test_hf_uri_in_a_fresh_process_with_hub_env(hub_cache, tmp_path):
    """The documented environment: HF_HUB_OFFLINE=1 + HF_HUB_CACHE, data inspect hf://…@rev."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "PYTHONPATH": str(ROOT),
           "WBCGEN_CACHE": str(tmp_path / "wc")}
    cmd = ["data", "inspect", f"hf://me/pbc-parquet@{COMMIT}", "--json"]
    p = subprocess.run([sys.executable, "-c", "from wbcgen.cli import main; main()", *cmd], env=env,
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)
    assert summary["counts"] == {c: TRAIN[c] + 1 for c in CLASSES}
    assert (tmp_path / "wc" / "hf" / f"me--pbc-parquet@{COMMIT}" / "source.json").is_file()
