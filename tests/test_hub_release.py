"""Hub repos as real users meet them (issue 13): cards edited on the Hub, `datasets` loading
with a ClassLabel, exact manifests, provenance-based licences, model-index and base_model,
mixin cards, folder modes, symlinks and magic bytes, sharding at the limit, CLASS_TO_IDX.
Real PBC images, real generators and classifiers, dry-run folders and an offline Hub cache."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

import classifiers
from classifiers.runtime import UserError
from test_hub import (clf_run, eval_run, gan_root, make_generator, populate_cache, sha,  # noqa: F401
                      synth, tree, write_generation)
from wbcgen.data import CLASS_TO_IDX, CLASSES, load_cells
from wbcgen.data.decode import BadImage, decode, parse_crop
from wbcgen.hub import download, load_generator_from_hub, push, resolve_generators


@pytest.fixture()
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def rewrite_manifest(repo: Path, **changes) -> None:
    m = json.loads((repo / "wbcgen.json").read_text())
    m.update(changes)
    (repo / "wbcgen.json").write_text(json.dumps(m))


# --------------------------------------------------------------------- 1. editable cards


def test_card_edited_on_the_hub_still_downloads_and_samples(gan_root, synth, eval_run, tmp_path, offline):
    gan, ds, cache = tmp_path / "gan", tmp_path / "ds", tmp_path / "hub"
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=gan, eval_dir=eval_run[0], progress=False)
    push(synth, "me/wbc-syn", dry_run=True, to=ds, progress=False)
    pinned = json.loads((gan / "wbcgen.json").read_text())["sha256"]
    assert sorted(pinned) == ["basophil/config.json", "basophil/model.safetensors", "basophil/run_config.json",
                              "config.json", "monocyte/config.json", "monocyte/model.safetensors",
                              "monocyte/run_config.json", "results.json"]
    assert sorted(json.loads((ds / "wbcgen.json").read_text())["sha256"]) == ["generation.json", "metadata.csv"]
    for repo in (gan, ds):                              # what a maintainer does in the Hub's card editor
        card = (repo / "README.md").read_text()
        (repo / "README.md").write_text(card.replace("tags: [", "tags: [\"blood\", ", 1) + "\nEdited on the Hub.\n")
    (gan / "report.html").write_text("<p>re-rendered</p>")
    populate_cache(cache, gan, "me/wbc-dcgan", "model")
    populate_cache(cache, ds, "me/wbc-syn", "dataset")
    assert sorted(resolve_generators("me/wbc-dcgan", cache_dir=cache)) == ["basophil", "monocyte"]
    G = load_generator_from_hub("me/wbc-dcgan", "monocyte", cache_dir=cache)
    assert torch.equal(G.fc.weight, gan_root[1]["monocyte"].fc.weight)
    got = download("me/wbc-syn", tmp_path / "cells", cache_dir=cache, progress=False)
    assert got["counts"] == {c: 3 for c in CLASSES}
    assert "Edited on the Hub." in (tmp_path / "cells" / "README.md").read_text()
    # weights are still pinned: a changed generator is refused
    w = gan / "basophil" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(UserError, match="basophil/model.safetensors does not match its sha256"):
        resolve_generators(gan)


# ------------------------------------------------------------ 2. datasets + ClassLabel


@pytest.mark.parametrize("per_folder", [10_000, 2])
def test_datasets_loads_a_pushed_folder_with_a_classlabel(synth, tmp_path, per_folder):
    from datasets import ClassLabel, load_dataset

    repo = tmp_path / "repo"
    push(synth, "me/wbc-syn", dry_run=True, to=repo, max_per_folder=per_folder, progress=False)
    assert any(len(Path(f).parts) == 3 for f in tree(repo)) == (per_folder == 2)      # sharded or flat
    ds = load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "hf-datasets"))
    label = ds.features["label"]
    assert isinstance(label, ClassLabel) and label.names == list(CLASSES)
    assert ds.features["seed"].dtype == "int64" and ds.features["index"].dtype == "int64"
    assert len(ds) == 15
    by_key = {(r["label"], int(r["index"])): r["file_name"] for r in csv.DictReader(open(synth / "metadata.csv"))}
    for row in ds:
        name = label.int2str(row["label"])
        assert row["label"] == CLASS_TO_IDX[name] and row["generator_sha256"] == sha_of(name)
        src = load_cells_png(synth / by_key[(name, row["index"])])
        assert torch.equal(torch.from_numpy(np.array(row["image"].convert("RGB"))), src)


def sha_of(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def load_cells_png(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(path).convert("RGB")))


# ----------------------------------------------------- 3. merged shards get a new manifest


def test_downloaded_sharded_dataset_downloads_again(synth, tmp_path, offline):
    repo, cache = tmp_path / "repo", tmp_path / "hub"
    push(synth, "me/wbc-syn", dry_run=True, to=repo, max_per_folder=2, progress=False)
    populate_cache(cache, repo, "me/wbc-syn", "dataset")
    download("me/wbc-syn", tmp_path / "a", cache_dir=cache, progress=False)
    m = json.loads((tmp_path / "a" / "wbcgen.json").read_text())
    assert m["sha256"]["metadata.csv"] == sha(tmp_path / "a" / "metadata.csv") != sha(repo / "metadata.csv")
    again = download(tmp_path / "a", tmp_path / "b", progress=False)          # the second download
    assert again["counts"] == {c: 3 for c in CLASSES}
    assert load_cells(tmp_path / "b", progress=False).counts() == load_cells(synth, progress=False).counts()


# ------------------------------------------------- 4. every listed file, exactly the classes


def test_missing_listed_files_and_classes_are_refused(gan_root, synth, tmp_path, offline):
    gan, cache = tmp_path / "gan", tmp_path / "hub"
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=gan, progress=False)
    (gan / "monocyte" / "model.safetensors").unlink()
    populate_cache(cache, gan, "me/wbc-dcgan", "model")
    with pytest.raises(UserError, match="monocyte/model.safetensors is listed in wbcgen.json but missing"):
        resolve_generators("me/wbc-dcgan", cache_dir=cache)
    with pytest.raises(UserError, match="missing"):
        load_generator_from_hub("me/wbc-dcgan", "basophil", cache_dir=cache)
    shutil.rmtree(gan / "monocyte")                 # a whole class gone, manifest edited to match the files
    m = json.loads((gan / "wbcgen.json").read_text())
    rewrite_manifest(gan, sha256={k: v for k, v in m["sha256"].items() if not k.startswith("monocyte/")})
    with pytest.raises(UserError, match="lists the classes basophil, monocyte but the repo holds basophil"):
        resolve_generators(gan)
    ds = tmp_path / "ds"
    push(synth, "me/wbc-syn", dry_run=True, to=ds, progress=False)
    rows = [r for r in csv.DictReader(open(ds / "metadata.csv")) if r["label"] != "monocyte"]
    with open(ds / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    rewrite_manifest(ds, sha256={**json.loads((ds / "wbcgen.json").read_text())["sha256"],
                                 "metadata.csv": sha(ds / "metadata.csv")})
    populate_cache(cache, ds, "me/wbc-syn", "dataset")
    with pytest.raises(UserError, match="holds neutrophil, eosinophil, basophil, lymphocyte: it is incomplete"):
        download("me/wbc-syn", tmp_path / "cells", cache_dir=cache, progress=False)
    assert not (tmp_path / "cells").exists()


# ------------------------------------------------------------- 6. licence from provenance


def test_licence_and_source_come_from_provenance(synth, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(synth, bare)
    (bare / "generation.json").unlink()
    with pytest.raises(UserError, match="no generation.json provenance.*--data-source"):
        push(bare, "me/x", dry_run=True, to=tmp_path / "r0", progress=False)
    assert not (tmp_path / "r0").exists()
    push(bare, "me/x", dry_run=True, to=tmp_path / "r1", data_source="zheng2018", progress=False)
    assert metadata_load(tmp_path / "r1" / "README.md")["license"] == "gpl-3.0"
    write_generation(bare, {c: ("zheng2018", "gpl-3.0") for c in CLASSES})
    push(bare, "me/x", dry_run=True, to=tmp_path / "r2", progress=False)
    text = (tmp_path / "r2" / "README.md").read_text()
    assert metadata_load(tmp_path / "r2" / "README.md")["license"] == "gpl-3.0"
    assert "Zheng" in text and "Acevedo" not in text and "CC BY 4.0" not in text
    m = json.loads((tmp_path / "r2" / "wbcgen.json").read_text())
    assert (m["data_source"], m["license"]) == ("zheng2018", "gpl-3.0")
    write_generation(bare, {**{c: ("pbc", "cc-by-4.0") for c in CLASSES}, "basophil": ("zheng2018", "gpl-3.0")})
    with pytest.raises(UserError, match="different data.*bccd|different data"):
        push(bare, "me/x", dry_run=True, to=tmp_path / "r3", progress=False)
    write_generation(bare, {**{c: ("pbc", "cc-by-4.0") for c in CLASSES}, "basophil": (None, None)})
    with pytest.raises(UserError, match="no training-data source for basophil"):
        push(bare, "me/x", dry_run=True, to=tmp_path / "r4", progress=False)
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"model": "wnet", "test": {"accuracy": 0.5}}))
    with pytest.raises(UserError, match="no training-data source is recorded in this evaluation"):
        push(ev, "me/eval", dry_run=True, to=tmp_path / "r5")


# --------------------------------------------------- 7, 8. model-index, metric names, base


def test_model_index_links_only_hub_datasets_and_names_the_feature_network(gan_root, eval_run, tmp_path):
    res = json.loads(json.dumps(eval_run[1]))
    res["checks"]["distances"]["domain"]["feature_extractor"] = \
        "penultimate layer (64-d) of the reference dclnn classifier (runs/classifiers/dclnn)"
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps(res))
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=tmp_path / "a", eval_dir=ev, progress=False)
    meta = metadata_load(tmp_path / "a" / "README.md")
    assert "datasets" not in meta
    results = meta["model-index"][0]["results"]
    assert {r["dataset"]["type"] for r in results} == {"pbc"}
    names = {m["type"]: m["name"] for r in results for m in r["metrics"]}
    assert names["domain_fd"] == "Fréchet distance in DCLNN features"
    assert names["domain_kid"] == "KID in DCLNN features"
    assert "W-Net" not in (tmp_path / "a" / "README.md").read_text()
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=tmp_path / "b", eval_dir=ev, hub_dataset="someone/pbc",
         progress=False)
    meta = metadata_load(tmp_path / "b" / "README.md")
    assert meta["datasets"] == ["someone/pbc"]
    assert {r["dataset"]["type"] for r in meta["model-index"][0]["results"]} == {"someone/pbc"}
    with pytest.raises(UserError, match="--hub-dataset 'pbc dev' is not a valid Hub repo id"):
        push(gan_root[0], "me/x", dry_run=True, to=tmp_path / "c", hub_dataset="pbc dev")


def test_base_model_from_init_from_and_imagenet_weights(clf_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(clf_run[0], run)
    cfg = json.loads((run / "config.json").read_text())
    push(run, "me/dclnn", dry_run=True, to=tmp_path / "r0", progress=False)
    assert "base_model" not in metadata_load(tmp_path / "r0" / "README.md")       # trained from scratch
    parent = tmp_path / "parent"                                                   # a model downloaded from the Hub
    push(clf_run[0], "me/wnet-pbc", dry_run=True, to=tmp_path / "r-parent", progress=False)
    download(tmp_path / "r-parent", parent, repo_type="model", progress=False)
    (run / "config.json").write_text(json.dumps({**cfg, "init_from": str(parent)}))
    push(run, "me/dclnn-ft", dry_run=True, to=tmp_path / "r1", progress=False)
    meta = metadata_load(tmp_path / "r1" / "README.md")
    assert meta["base_model"] == "me/wnet-pbc" and meta["base_model_relation"] == "finetune"
    (run / "config.json").write_text(json.dumps({**cfg, "model": "resnet50",
                                                 "init_from": "/weights/resnet50-imagenet.pth"}))
    push(run, "me/r50", dry_run=True, to=tmp_path / "r2", progress=False)
    assert metadata_load(tmp_path / "r2" / "README.md")["base_model"] == "timm/resnet50.tv_in1k"
    assert "ImageNet weights `resnet50-imagenet.pth`" in (tmp_path / "r2" / "README.md").read_text()
    (run / "config.json").write_text(json.dumps({**cfg, "init_from": "/runs/local-wnet"}))
    push(run, "me/x", dry_run=True, to=tmp_path / "r3", base_model="me/wnet-v2", progress=False)
    assert metadata_load(tmp_path / "r3" / "README.md")["base_model"] == "me/wnet-v2"


# ------------------------------------------------------ 9. one library, mixin cards, index


def test_mixin_cards_and_gan_repo_index(gan_root, tmp_path):
    G, C = make_generator(), classifiers.create_model("dclnn")
    for model, pipeline in ((G, "unconditional-image-generation"), (C, "image-classification")):
        model.save_pretrained(tmp_path / pipeline)                   # what push_to_hub uploads
        card = ModelCard.load(tmp_path / pipeline / "README.md")
        assert card.data.library_name == "wbcgen" and card.data.pipeline_tag == pipeline
        assert "[More Information Needed]" not in card.text
        assert "not for diagnosis" in card.text and "Acevedo" in card.text and "wbcgen" in card.data.tags
    repo = tmp_path / "gan"
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=repo, progress=False)
    index = json.loads((repo / "config.json").read_text())
    assert index["classes"] == {"basophil": "basophil", "monocyte": "monocyte"}
    from wbcgen.gan import Generator

    for cls, sub in index["classes"].items():
        g = Generator.from_pretrained(str(repo / sub), strict=True)
        assert torch.equal(g.fc.weight, gan_root[1][cls].fc.weight)
    text = (repo / "README.md").read_text()
    assert "hf_hub_download(\"me/wbc-dcgan\", \"config.json\")" in text and "Generator.from_pretrained" in text
    assert ModelCard(text).data.library_name == "wbcgen"


# ------------------------------------------------------------------ 10. folder permissions


def test_out_folders_follow_the_umask(synth, tmp_path):
    old = os.umask(0o022)
    try:
        from classifiers.runtime import _umask_mode

        _umask_mode.cache_clear()
        push(synth, "me/x", dry_run=True, to=tmp_path / "repo", progress=False)
        download(tmp_path / "repo", tmp_path / "cells", progress=False)
    finally:
        os.umask(old)
        _umask_mode.cache_clear()
    assert (tmp_path / "repo").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "cells").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "cells" / "basophil").stat().st_mode & 0o777 == 0o755


# ----------------------------------------------------------- 11. symlinks and magic bytes


def test_symlinks_out_of_the_folder_and_fake_images_are_refused(synth, tmp_path, pbc_dir):
    outside = tmp_path / "secret.png"
    shutil.copyfile(synth / "basophil" / "000000.png", outside)
    ds = tmp_path / "ds"
    shutil.copytree(synth, ds)
    (ds / "basophil" / "000001.png").unlink()
    os.symlink(outside, ds / "basophil" / "000001.png")
    with pytest.raises(UserError, match="symlink to .*secret.png, outside the folder being pushed"):
        push(ds, "me/x", dry_run=True, to=tmp_path / "r0", progress=False)
    os.unlink(ds / "basophil" / "000001.png")
    os.symlink("000000.png", ds / "basophil" / "000001.png")          # inside the folder: fine
    push(ds, "me/x", dry_run=True, to=tmp_path / "r1", progress=False)
    repo = tmp_path / "r1"
    target = repo / "monocyte" / "000002.png"
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(UserError, match="monocyte/000002.png in .* is a symlink to .*secret.png, outside the repo"):
        download(repo, tmp_path / "cells", progress=False)
    release = tmp_path / "release" / "train" / "basophil"          # a plain ImageFolder release too
    release.mkdir(parents=True)
    shutil.copyfile(synth / "basophil" / "000000.png", release / "a.png")
    os.symlink(outside, release / "b.png")
    with pytest.raises(UserError, match="basophil/b.png in .* is a symlink to .*secret.png, outside the repo"):
        download(tmp_path / "release", tmp_path / "cells", progress=False)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n%%EOF\n"
    target.unlink()
    target.write_bytes(eps)
    with pytest.raises(UserError, match="000002.png is not a PNG, JPEG, BMP or TIFF image"):
        download(repo, tmp_path / "cells", progress=False)
    (ds / "monocyte" / "000002.png").write_bytes(eps)
    with pytest.raises(UserError, match="000002.png is not a PNG, JPEG, BMP or TIFF image"):
        push(ds, "me/x", dry_run=True, to=tmp_path / "r2", progress=False)
    assert not any((tmp_path / n).exists() for n in ("r0", "r2", "cells"))
    with pytest.raises(BadImage, match="not a readable image"):               # never handed to Ghostscript
        decode(eps, parse_crop("none"), 64)
    real = sorted((pbc_dir / "basophil").iterdir())[0].read_bytes()
    assert decode(real, parse_crop("none"), 64)[0].shape == (64, 64, 3)


# -------------------------------------------------------------- 12. shard at the limit


def test_exactly_the_limit_is_sharded(synth, tmp_path):
    from wbcgen.hub.layout import shard_size

    for limit, shards in ((3, 3), (4, 1), (10_000, 1)):               # 3 images per class
        out = tmp_path / f"r{limit}"
        push(synth, "me/x", dry_run=True, to=out, max_per_folder=limit, progress=False)
        per_folder: dict[str, int] = {}
        for f in tree(out):
            if f.endswith(".png"):
                per_folder[str(Path(f).parent)] = per_folder.get(str(Path(f).parent), 0) + 1
        if limit == 3:                                                 # exactly the limit: sharded
            assert per_folder == {f"{c}/{s:04d}": 1 for c in CLASSES for s in range(shards)}
        else:
            assert per_folder == {c: 3 for c in CLASSES}
        assert max(per_folder.values()) < limit
    assert shard_size(10_000) == 5_000


# ------------------------------------------------------- 13. wbcgen's order in ImageFolder


def test_imagefolder_in_wbcgen_order(synth, tmp_path):
    from torchvision.datasets import ImageFolder

    push(synth, "me/x", dry_run=True, to=tmp_path / "repo", progress=False)
    download(tmp_path / "repo", tmp_path / "cells", progress=False)
    plain = ImageFolder(tmp_path / "cells")
    assert plain.class_to_idx["basophil"] == 0 != CLASS_TO_IDX["basophil"]          # alphabetical

    class WbcFolder(ImageFolder):                                                   # the README's recipe
        def find_classes(self, directory):
            return list(CLASS_TO_IDX), CLASS_TO_IDX

    ds = WbcFolder(tmp_path / "cells")
    assert ds.class_to_idx == CLASS_TO_IDX and len(ds) == 15
    assert all(CLASSES[y] == Path(p).parent.name for p, y in ds.samples)
