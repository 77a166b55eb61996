"""Hub integration, offline: push --dry-run layouts, cards, strict loading, download from a
local folder and from a pre-populated Hub cache (HF_HUB_OFFLINE), and Hub failures injected
at the HfApi boundary. Real PBC images and real models throughout; no network."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import eval_results_to_model_index
from PIL import Image
from safetensors.torch import load_file, save_file

import classifiers
from classifiers.metrics import classification_report
from classifiers.runtime import UserError
from wbcgen.cli.hub_cmds import push_cmd
from wbcgen.data import CLASSES, load_cells
from wbcgen.hub.cards import eval_summary, model_index
from wbcgen.hub import (download, load_classifier_from_hub, load_generator_from_hub, load_pretrained, push,
                        resolve_generator_source, resolve_generators, validate_card)

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_generator():
    """The real per-class generator (tiny preset), which inherits PyTorchModelHubMixin."""
    from wbcgen.gan import create_gan

    return create_gan("tiny")[0]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != ".wbcgen-output.json")  # download's hidden "ours" marker


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def synth(tmp_path_factory, pbc_dir) -> Path:
    """A 'generated dataset' as `wbcgen sample` writes it, made from real pbc-dev cells (3/class)."""
    root = tmp_path_factory.mktemp("synth")
    rows = []
    for c in CLASSES:
        (root / c).mkdir()
        for i, f in enumerate(sorted((pbc_dir / c).iterdir())[:3]):
            Image.open(f).convert("RGB").crop((80, 80, 280, 280)).resize((128, 128)).save(root / c / f"{i:06d}.png")
            rows.append({"file_name": f"{c}/{i:06d}.png", "label": c, "seed": "7", "index": str(i),
                         "generator_sha256": hashlib.sha256(c.encode()).hexdigest()})
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_generation(root, {c: ("pbc", "cc-by-4.0") for c in CLASSES}, seed=7, n=3)
    return root


def write_generation(root: Path, sources: dict, seed: int = 7, n: int = 3) -> None:
    """generation.json as the shared schema (COMMON.md) has `wbcgen sample` write it."""
    gens = {c: {"weights_sha256": hashlib.sha256(c.encode()).hexdigest(), "run_config": {"cls": c},
                "data_source": src, "license": lic, "train_images_sha256": None, "n_train_images": None}
            for c, (src, lic) in sources.items()}
    (root / "generation.json").write_text(json.dumps({"kind": "wbcgen-synthetic-dataset", "version": 1, "seed": seed,
                                                       "n_per_class": n, "generators": gens}))


def _feat(cells) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(cells.images.float() / 255, 8).flatten(1).double()  # 4×4 mean colour


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, pbc_small, synth) -> tuple[Path, dict]:
    """An evaluation run in evaluate's schema, with real numbers: nearest-centroid TSTR on real
    PBC images and distance reports (wbcgen.metrics) in a small colour-feature space."""
    from wbcgen.evaluate.summary import headline
    from wbcgen.metrics import distance_report

    real, syn = load_cells(pbc_small, size=32, progress=False), load_cells(synth, size=32, progress=False)
    fr, fs = _feat(real), _feat(syn)
    centroids = torch.stack([fs[syn.labels == k].mean(0) for k in range(len(CLASSES))])
    pred = torch.cdist(fr, centroids).argmin(1)
    per = {c: distance_report(fr[real.labels == k], fs[syn.labels == k], splits=4) for k, c in enumerate(CLASSES)}
    per["overall"] = distance_report(fr, fs, splits=4)
    res = {"model": "nearest-centroid", "train_on": "synthetic", "classes": list(CLASSES),
           "test": classification_report(real.labels, pred, CLASSES),
           "sources": {"real": {"path": str(pbc_small), "n": len(real)}},
           "checks": {"distances": {"domain": {"feature_extractor": "4×4 mean colour (test features)",
                                               "per_class": per, "protocol": {"fd": "float64", "kid": "cubic"}}}}}
    res.update(headline(res))
    d = tmp_path_factory.mktemp("eval")
    (d / "results.json").write_text(json.dumps(res))
    (d / "report.html").write_text("<!doctype html><title>report</title>")
    return d, res


@pytest.fixture(scope="module")
def gan_root(tmp_path_factory, pbc_dir) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("runs") / "gan"
    gens = {}
    for c in ("basophil", "monocyte"):
        torch.manual_seed(len(c))
        run = root / c / "20250101-000000"
        gens[c] = make_generator()
        gens[c].save_pretrained(run / "generator")
        (run / "config.json").write_text(json.dumps({"kind": "wbcgen-gan-run", "cls": c,
                                                     "data": {"source": str(pbc_dir)}}))
    return root, gens


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory, pbc_small) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    """A classifier run folder: real DCLNN weights/config plus results.json from real predictions."""
    run = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    model = classifiers.create_model("dclnn").eval()
    model.save_pretrained(run)
    args = classifiers.model_args("dclnn")
    cfg = {**args, "model": "dclnn", "model_args": args, "classes": list(CLASSES),
           "data": {"source": str(pbc_small)}}
    (run / "config.json").write_text(json.dumps(cfg))
    cells = load_cells(pbc_small, size=64, progress=False).subset(list(range(0, 60, 6)))
    x = torch.nn.functional.interpolate(cells.images.float() / 255, size=model.input_size)
    with torch.no_grad():
        pred = model(x).argmax(1)
    report = classification_report(cells.labels, pred, CLASSES)
    (run / "results.json").write_text(json.dumps({"model": "dclnn", "test": report}))
    return run, model, x


# -------------------------------------------------------------------------- push layouts


def test_push_dry_run_classifier_exact_layout_and_strict_reload(clf_run, tmp_path):
    run, model, x = clf_run
    res = CliRunner().invoke(push_cmd, [str(run), "--repo-id", "me/dclnn-pbc", "--dry-run", "--to",
                                        str(tmp_path / "repo"), "--json"])
    assert res.exit_code == 0, res.output
    repo = tmp_path / "repo"
    assert tree(repo) == ["README.md", "config.json", "model.safetensors", "results.json", "wbcgen.json"]
    manifest = json.loads((repo / "wbcgen.json").read_text())
    assert manifest["kind"] == "classifier" and manifest["license"] == "cc-by-4.0"
    assert all(sha(repo / f) == h for f, h in manifest["sha256"].items()) and "model.safetensors" in manifest["sha256"]
    card = ModelCard.load(repo / "README.md")
    assert "--adapt" not in card.text   # no activation statistics in this run: the card does not offer it
    acc = json.loads((run / "results.json").read_text())["test"]["accuracy"]
    assert card.data.eval_results[0].metric_type == "accuracy"
    assert card.data.eval_results[0].metric_value == pytest.approx(round(acc, 4))
    loaded, cfg = load_classifier_from_hub(repo)
    assert cfg["model"] == "dclnn"
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    got = download(repo, tmp_path / "dl", repo_type="model", progress=False)        # the round trip a user does
    assert got["layout"] == "files" and tree(tmp_path / "dl") == tree(repo)
    pred = classifiers.load_run(tmp_path / "dl")
    assert torch.equal(pred.predict((x * 255).round().to(torch.uint8)),
                       classifiers.load_run(run).predict((x * 255).round().to(torch.uint8)))


def test_push_dry_run_gan_one_repo_subfolder_per_class(gan_root, eval_run, tmp_path):
    root, gens = gan_root
    out = tmp_path / "repo"
    res = push(root, "me/wbc-dcgan", dry_run=True, to=out, eval_dir=eval_run[0], progress=False)
    assert res["kind"] == "gan" and res["repo_type"] == "model"
    assert tree(out) == ["README.md", "basophil/config.json", "basophil/model.safetensors",
                         "basophil/run_config.json", "config.json", "monocyte/config.json", "monocyte/model.safetensors",
                         "monocyte/run_config.json", "report.html", "results.json", "wbcgen.json"]
    assert resolve_generator_source(out) == out
    assert resolve_generators(out) == {"basophil": out / "basophil", "monocyte": out / "monocyte"}
    assert resolve_generators(root) == {c: root / c / "20250101-000000" / "generator" for c in gens}
    for c, g in gens.items():
        G = load_generator_from_hub(out, c)
        assert not G.training
        ref = g.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in G.state_dict().items()) and G.state_dict().keys() == ref.keys()
    from wbcgen.gan.runs import find_runs           # what `wbcgen sample --from` does with the resolved folder
    from wbcgen.gan.sample import load_generator

    assert find_runs(resolve_generator_source(out)) == resolve_generators(out)
    assert torch.equal(load_generator(out / "monocyte").fc.weight, gens["monocyte"].fc.weight)
    with pytest.raises(UserError, match="no generator for eosinophil"):
        load_generator_from_hub(out, "eosinophil")


def test_push_dry_run_dataset_shards_and_round_trips(synth, tmp_path):
    out = tmp_path / "repo"
    res = push(synth, "me/wbc-synthetic", dry_run=True, to=out, max_per_folder=2, progress=False)
    assert res["repo_type"] == "dataset"
    files = tree(out)
    assert files[:3] == ["README.md", "basophil/0000/000000.png", "basophil/0001/000001.png"]
    assert len(files) == 4 + 15 and "metadata.csv" in files and "wbcgen.json" in files and "generation.json" in files
    folders: dict[str, int] = {}
    for f in files:
        folders[str(Path(f).parent)] = folders.get(str(Path(f).parent), 0) + 1
    assert max(n for d, n in folders.items() if d != ".") == 1          # < max_per_folder files per folder
    src = {r["label"] + r["index"]: sha(synth / r["file_name"]) for r in csv.DictReader(open(synth / "metadata.csv"))}
    rows = list(csv.DictReader(open(out / "metadata.csv")))
    assert len(rows) == 15 and all(sha(out / r["file_name"]) == src[r["label"] + r["index"]] for r in rows)
    assert [r["file_name"] for r in rows[:3]] == ["neutrophil/0000/000000.png", "neutrophil/0001/000001.png",
                                                  "neutrophil/0002/000002.png"]      # row order kept
    # local repo folder -> download -> flat class folders that the data layer reads
    (out / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    (out / "basophil" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    got = download(out, tmp_path / "cells", progress=False)
    assert got["counts"] == {c: 3 for c in CLASSES}
    cells_files = tree(tmp_path / "cells")
    assert not any(f.endswith((".pkl", ".bin")) for f in cells_files)
    assert sorted(f for f in cells_files if f.endswith(".png")) == sorted(r["file_name"] for r in
                                                                          csv.DictReader(open(synth / "metadata.csv")))
    a, b = load_cells(synth, progress=False), load_cells(tmp_path / "cells", progress=False)
    assert a.counts() == b.counts() and torch.equal(a.images, b.images)


def test_push_refuses_bad_input(synth, tmp_path, clf_run):
    with pytest.raises(UserError, match="USER/NAME"):
        push(synth, "not a repo", dry_run=True, to=tmp_path / "x")
    with pytest.raises(UserError, match="only works with --dry-run"):
        push(synth, "me/x", to=tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    for ow in (False, True):  # not ours: left alone, and --overwrite is not suggested
        with pytest.raises(UserError, match="left alone") as e:
            push(clf_run[0], "me/x", dry_run=True, to=tmp_path / "busy", overwrite=ow)
        assert "--overwrite" not in str(e.value)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.csv").write_text("file_name,label\n../../etc/passwd.png,basophil\n")
    with pytest.raises(UserError, match="unsafe file name"):
        push(bad, "me/x", dry_run=True, to=tmp_path / "y", progress=False)
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"model": "wnet", "test": {"accuracy": 0.5}}))
    (ev / "checkpoint.pt").write_bytes(b"pickle")                     # never pushed
    res = push(ev, "me/eval", dry_run=True, to=tmp_path / "evrepo", data_source="other", license="mit")
    assert res["kind"] == "evaluation" and tree(tmp_path / "evrepo") == ["README.md", "results.json", "wbcgen.json"]
    assert ModelCard.load(tmp_path / "evrepo" / "README.md").data.license == "mit"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot tell what"):
        push(tmp_path / "empty", "me/x", dry_run=True, to=tmp_path / "z")
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


# ---------------------------------------------------------------------------------- cards


def test_cards_validate_and_round_trip_model_index(gan_root, eval_run, synth, tmp_path):
    out, (eval_dir, res) = tmp_path / "repo", eval_run
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=out, eval_dir=eval_dir, progress=False)
    text = (out / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.license == "cc-by-4.0" and card.data.library_name == "wbcgen"
    assert {"wbcgen", "gan", "white-blood-cells"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.metrics == ["accuracy", "domain_fd", "domain_kid"]
    ev = {r.metric_type: r for r in card.data.eval_results}
    assert ev["accuracy"].metric_value == round(res["tstr_accuracy"], 4) and "TSTR" in ev["accuracy"].metric_name
    assert ev["accuracy"].dataset_type == "pbc"            # a source key, never a local folder name
    assert "datasets" not in metadata_load(out / "README.md")   # no Hub dataset known: no link
    fd = ev["domain_fd"]
    assert fd.metric_value == round(res["domain_fd"]["overall"], 6) and fd.metric_args["floor"] >= 0
    assert fd.metric_args["floor"] == round(res["domain_fd"]["floor"], 6)
    assert fd.metric_args["n_real"] == 60 and fd.metric_args["n_synthetic"] == 15 and fd.metric_args["fd"] == "float64"
    assert ev["domain_kid"].metric_args["std"] == round(res["domain_kid"]["std"], 6)
    meta = metadata_load(out / "README.md")
    assert eval_results_to_model_index(card.data.model_name, card.data.eval_results) == meta["model-index"]
    assert "Inception-v3 FID/KID were not computed" in text
    assert "not for diagnosis" in text.lower() and "research and education only" in text.lower()
    assert "Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J." in text and "CC BY 4.0" in text
    with pytest.raises(UserError, match="model-index|invalid"):
        validate_card(text.replace("  results:", "  resultz:"), "model")
    with pytest.raises(UserError, match="not for diagnosis"):
        validate_card(text.replace("not for diagnosis", "for diagnosis"), "model")
    with pytest.raises(UserError, match="attribution"):
        validate_card(text.replace("Acevedo", "Someone"), "model", pbc=True)
    ds = tmp_path / "ds"
    push(synth, "me/wbc-synthetic", dry_run=True, to=ds, progress=False)
    dcard = DatasetCard.load(ds / "README.md")
    assert dcard.data.license == "cc-by-4.0" and dcard.data.size_categories == ["n<1K"]
    assert dcard.data.task_categories == ["image-classification"] and "synthetic-data" in dcard.data.tags
    assert "| basophil | 3 |" in dcard.text and "**total** | **15**" in dcard.text


def test_card_reports_inception_fid_kid_with_pinned_protocol(eval_run):
    from wbcgen.metrics.inception import protocol

    res = json.loads(json.dumps(eval_run[1]))
    dist = res["checks"]["distances"]
    dist["inception"] = {**dist["domain"], "protocol": protocol({"weights_sha256": "f" * 64})}
    res["fid"], res["kid"] = res["domain_fd"], res["domain_kid"]   # same numbers, Inception slot
    idx = model_index(eval_summary(res), "pbc")
    gen = {m["type"]: m for m in idx[1]["metrics"]}
    assert list(gen) == ["fid", "kid", "domain_fd", "domain_kid"]
    assert idx[1]["task"]["type"] == "unconditional-image-generation"
    assert "antialias=False" in gen["fid"]["args"]["resize"] and gen["fid"]["args"]["input"].startswith("uint8")
    assert gen["fid"]["args"]["feature_dim"] == 48            # the measured features' dimension wins
    assert gen["kid"]["args"]["weights_sha256"] == "f" * 64 and gen["kid"]["args"]["n_real"] == 60


# ------------------------------------------------------------------------- strict loading


def test_strict_load_rejects_tampered_keys(tmp_path):
    torch.manual_seed(1)
    g = make_generator()
    g.save_pretrained(tmp_path / "g")
    cls = type(g)
    assert torch.equal(next(iter(load_pretrained(cls, tmp_path / "g").state_dict().values())),
                       next(iter(g.state_dict().values())))
    w = load_file(tmp_path / "g" / "model.safetensors")
    first = sorted(w)[0]
    w["extra.weight"] = w.pop(first)
    save_file(w, tmp_path / "g" / "model.safetensors")
    cls.from_pretrained(tmp_path / "g")            # huggingface_hub's default strict=False accepts it silently
    with pytest.raises(UserError, match=f"do not match {cls.__name__}.*{first}"):
        load_pretrained(cls, tmp_path / "g")
    (tmp_path / "g" / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(UserError, match="corrupt|cannot load"):
        load_pretrained(cls, tmp_path / "g")


# ------------------------------------------------------------------ download from the cache


def populate_cache(cache: Path, repo: Path, repo_id: str, repo_type: str, revision: str = "main") -> None:
    """Lay ``repo`` out exactly like huggingface_hub's cache: blobs/, snapshots/<commit>/, refs/<rev>."""
    store = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for f in tree(repo):
        blob = store / "blobs" / sha(repo / f)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / f, blob)
        link = store / "snapshots" / COMMIT / f
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (store / "refs").mkdir(exist_ok=True)
    (store / "refs" / revision).write_text(COMMIT)


@pytest.fixture()
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_download_from_offline_cache(synth, gan_root, tmp_path, offline):
    repo, cache = tmp_path / "repo", tmp_path / "hub"
    push(synth, "me/wbc-synthetic", dry_run=True, to=repo, progress=False)
    (repo / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # in the cache, never copied out
    populate_cache(cache, repo, "me/wbc-synthetic", "dataset")
    for rev in (None, COMMIT):
        out = tmp_path / f"cells-{rev}"
        got = download("me/wbc-synthetic", out, revision=rev, cache_dir=cache, progress=False)
        assert got["counts"] == {c: 3 for c in CLASSES} and not (out / "pytorch_model.bin").exists()
        assert load_cells(out, progress=False).counts() == load_cells(synth, progress=False).counts()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        download("me/wbc-synthetic", tmp_path / "v9", revision="v9", cache_dir=cache, progress=False)
    assert not (tmp_path / "v9").exists()
    gan_repo = tmp_path / "gan-repo"
    push(gan_root[0], "me/wbc-dcgan", dry_run=True, to=gan_repo, progress=False)
    populate_cache(cache, gan_repo, "me/wbc-dcgan", "model")
    src = resolve_generator_source("me/wbc-dcgan", cache_dir=cache)
    assert src.parts[-2:] == ("snapshots", COMMIT) and sorted(resolve_generators(src)) == ["basophil", "monocyte"]
    G = load_generator_from_hub("me/wbc-dcgan", "basophil", cache_dir=cache)
    assert all(torch.equal(v, gan_root[1]["basophil"].state_dict()[k]) for k, v in G.state_dict().items())


def test_cli_download_offline_env_and_token_never_printed(synth, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set: served from the cache;
    an uncached revision gets the offline sentence; the token never appears."""
    repo, cache = tmp_path / "repo", tmp_path / "hub"
    push(synth, "me/wbc-synthetic", dry_run=True, to=repo, progress=False)
    populate_cache(cache, repo, "me/wbc-synthetic", "dataset")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_TOKEN": "hf_SeCrEtToKeN12345"}
    script = ("import sys; from click.testing import CliRunner; from wbcgen.cli import main\n"
              "for extra in ([], ['--revision', 'nope']):\n"
              "    out = sys.argv[1] + str(len(extra))\n"
              "    r = CliRunner().invoke(main, ['download', 'me/wbc-synthetic', '--out', out] + extra)\n"
              "    print('EXIT', r.exit_code, r.output)\n")
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cells")], env=env, capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    ok, bad = p.stdout.split("EXIT ")[1:]
    assert ok.startswith("0 ") and "basophil 3" in ok
    assert load_cells(tmp_path / "cells0", progress=False).counts() == {c: 3 for c in CLASSES}
    assert bad.startswith("1 ") and "HF_HUB_OFFLINE=1 forbids downloading" in bad and "Traceback" not in bad
    assert not (tmp_path / "cells2").exists()
    assert "hf_SeCrEtToKeN12345" not in p.stdout + p.stderr
