"""Several GAN runs under one command (issue 12): per-class runs sharing ``--minutes`` and the
``pretrain`` schedule — one pooled model of every class first, whose weights start each class's
run — on real pbc-dev images, tiny widths."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from classifiers.runtime import UserError, load_checkpoint
from wbcgen.cli import main
from wbcgen.gan import load_config, train_gan
from wbcgen.gan import train as gan_train
from wbcgen.gan.models import Generator
from wbcgen.gan.schedule import train_gans

TINY = load_config("tiny")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _params(ckpt_file, cfg) -> dict:
    g = Generator(cfg.to_dict())
    g.load_state_dict(load_checkpoint(ckpt_file)["G"])
    return {k: v.detach().clone() for k, v in g.named_parameters()}


def test_budget_share_splits_what_is_left_equally(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(gan_train, "budget_clock", lambda: now[0])
    deadline = 1000.0 + 60 * 10  # 10 minutes for 5 runs
    assert gan_train.budget_share(None, 5) is None
    assert gan_train.budget_share(deadline, 5) == pytest.approx(2.0)
    now[0] += 60 * 4  # the first two runs (and a one-off cost) took 4 minutes: 6 left for 3
    assert gan_train.budget_share(deadline, 3) == pytest.approx(2.0)
    now[0] += 60 * 5.5  # the next one overshot: the last two share what is left
    assert gan_train.budget_share(deadline, 2) == pytest.approx(0.25)
    now[0] = deadline + 30  # past the end: still a positive budget (one step)
    assert 0 < gan_train.budget_share(deadline, 1) < 0.01


def test_pretrain_trains_one_pooled_model_that_starts_every_class(cells, tmp_path):
    # lr 0: the class runs keep exactly the pooled model's weights, so the start is visible
    cfg = TINY.replace(pretrain=0.5, lr_g=0.0, lr_d=0.0)
    runs = train_gans(cells, ["basophil", "monocyte"], config=cfg, out_root=tmp_path, steps=3, seed=4,
                      progress=False)
    assert list(runs) == ["pooled", "basophil", "monocyte"]
    pooled = runs["pooled"]
    assert pooled.parent == tmp_path / "gan" / "pooled"
    pmeta = json.loads((pooled / "config.json").read_text())
    assert pmeta["cls"] == "pooled" and pmeta["data"]["n_images"] == len(cells) == 60
    start = _params(pooled / "checkpoints" / "latest.safetensors", cfg)
    for c in ("basophil", "monocyte"):
        meta = json.loads((runs[c] / "config.json").read_text())
        assert meta["init_from"]["run_id"] == pooled.name and meta["init_from"]["step"] == 3
        assert meta["init_from"]["cls"] == "pooled"
        after = _params(runs[c] / "checkpoints" / "latest.safetensors", cfg)
        assert all(torch.equal(start[k], after[k]) for k in start)
        # what the weights have seen: the class's own images first, then every pooled image once
        rows = _rows(runs[c] / "train_images.csv")
        assert len(rows) == 60 and len({r["sha256"] for r in rows}) == 60
        assert {r["label"] for r in rows[:12]} == {c}
        assert len(_rows(runs[c] / "generator" / "train_images.csv")) == 60
        assert meta["data"]["n_train_images"] == 60 and meta["data"]["n_images"] == 12
    # without pretrain: two runs, each on its own 12 images, nothing pooled
    plain = train_gans(cells, ["basophil", "monocyte"], config=TINY, out_root=tmp_path / "p", steps=2, seed=4,
                       progress=False)
    assert list(plain) == ["basophil", "monocyte"] and not (tmp_path / "p" / "gan" / "pooled").exists()
    assert len(_rows(plain["basophil"] / "train_images.csv")) == 12


def test_pretrain_shares_the_minutes_and_init_errors_are_one_sentence(cells, tmp_path):
    cfg = TINY.replace(pretrain=0.5)
    runs = train_gans(cells, ["basophil", "monocyte"], config=cfg, out_root=tmp_path, minutes=0.1, seed=0,
                      progress=False)
    budgets = {c: json.loads((r / "config.json").read_text())["budget"][0]["minutes"] for c, r in runs.items()}
    assert budgets["pooled"] == pytest.approx(0.05)
    assert 0 < budgets["monocyte"] <= budgets["basophil"] <= 0.025 + 1e-9
    with pytest.raises(UserError, match="no checkpoints/latest"):
        train_gan(cells, "basophil", config=TINY, out_root=tmp_path, steps=1, init_from=tmp_path)
    with pytest.raises(UserError, match="do not fit"):  # another architecture
        train_gan(cells, "basophil", config="fast64", out_root=tmp_path, steps=1, init_from=runs["pooled"])
    with pytest.raises(UserError, match="drop init_from"):
        train_gan(cells, "basophil", out_root=tmp_path, resume=True, init_from=runs["pooled"])
    with pytest.raises(UserError, match="pretrain"):
        load_config("cond").replace(pretrain=0.3)
    with pytest.raises(UserError, match="pretrain"):
        TINY.replace(pretrain=1.0)
    assert not list((tmp_path / "gan" / "basophil").glob("*fast64*"))  # a failed start leaves no stub


@pytest.mark.parametrize("key", ["cls_weight", "fm_weight"])
def test_pretrain_records_that_the_pooled_run_trains_unguided(cells, tmp_path, key):
    # the guide pulls a class's fakes towards that class in a classifier of every class: a pooled run has none
    cfg = TINY.replace(pretrain=0.5, feat_steps=2, **{key: 0.5})
    runs = train_gans(cells, ["basophil", "monocyte"], config=cfg, out_root=tmp_path, steps=2, seed=1,
                      progress=False)
    pmeta = json.loads((runs["pooled"] / "config.json").read_text())
    assert pmeta["guide"].startswith("off:") and "pooled run trains on every class's images" in pmeta["guide"]
    assert "feature_net" not in pmeta
    for c in ("basophil", "monocyte"):  # the class runs are guided, and say so
        meta = json.loads((runs[c] / "config.json").read_text())
        assert "guide" not in meta and key in meta["feature_net"]["use"]


def test_cli_pretrain_config_lists_every_run(pbc_small, tmp_path):
    cfg_file = tmp_path / "pre.toml"
    cfg_file.write_text('base = "tiny"\nname = "tinypre"\npretrain = 0.4\n')
    res = CliRunner().invoke(main, ["train-gan", "--cls", "eosinophil,lymphocyte", "--config", str(cfg_file),
                                    "--steps", "2", "--data", str(pbc_small), "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if "/gan/" in x]
    assert [x.split(":")[0] for x in lines] == ["pooled", "eosinophil", "lymphocyte"]
    for c in ("pooled", "eosinophil", "lymphocyte"):
        assert len(list((tmp_path / "gan" / c).iterdir())) == 1


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "bench" / "configs").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_every_benchmark_config_loads_and_names_itself(path):
    """`bench_quality.py --method bench/configs/X.toml` must not fail after an hour of set-up."""
    cfg = load_config(path)
    assert cfg.name == path.stem
