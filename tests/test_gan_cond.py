"""Class-conditional GAN (issue 12): one model for all classes, --minutes budgets, sampling one
class from it, push layout, bit-identical resume — on real pbc-dev images, tiny widths."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from classifiers.runtime import UserError, load_checkpoint
from wbcgen.cli import main
from wbcgen.data import CLASSES
from wbcgen.gan import Generator, create_gan, find_runs, generate, load_config, load_generator, train_gan
from wbcgen.gan.models import ClassGenerator

from evalkit import kill_during_step_7

ROOT = Path(__file__).resolve().parents[1]
TINY_COND = load_config("tiny").replace(conditional=True, name="tinycond")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def cond_run(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("cond_runs")
    run = train_gan(cells, "all", config=TINY_COND, out_root=out, steps=6, seed=3, progress=False)
    return out, run


def _one_line_error(res) -> str:
    assert res.exit_code != 0
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def test_cond_recipe_mirrors_preset_and_is_conditional():
    assert load_config(str(ROOT / "recipes" / "dcgan-cond.toml")).to_dict() == load_config("cond").to_dict()
    cfg = load_config("cond")
    assert cfg.conditional and cfg.g_widths == load_config("fast").g_widths
    with pytest.raises(UserError, match="conditional models use the fast family"):
        load_config("paper").replace(conditional=True)


def test_conditional_model_strict_round_trip_fold_and_projection(tmp_path):
    torch.manual_seed(0)
    G, D = create_gan(TINY_COND, classes=["basophil", "eosinophil", "monocyte"])
    G.train()
    z, y = torch.randn(8, G.z_dim), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(3):  # move the BN statistics away from their initial values
        G(torch.randn(8, G.z_dim), y)
    G.eval()
    G.save_pretrained(tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["conditional"] is True and cfg["classes"] == ["basophil", "eosinophil", "monocyte"]
    H = Generator.from_pretrained(tmp_path / "g", strict=True).eval()
    with torch.no_grad():
        assert torch.equal(H(z, y), G(z, y))
        # the per-class view samples like a per-class generator; its BN-folded form matches
        v = H.for_class("eosinophil")
        torch.testing.assert_close(v.folded()(z), G(z, torch.ones(8, dtype=torch.long)), atol=2e-5, rtol=1e-4)
        # the class label changes the image (per-class BN scale/shift differ)
        assert not torch.allclose(v(z), H.for_class("monocyte")(z))
        x = G(z, y) * 2 - 1
        assert not torch.allclose(D(x, y), D(x, (y + 1) % 3))  # projection D reads the label
    with pytest.raises(ValueError, match="needs class indices"):
        G(z)
    with pytest.raises(UserError, match="class-conditional"):
        generate(H, 2, seed=0)


def test_conditional_run_layout_balanced_batches_and_find_runs(cond_run, cells):
    out, run = cond_run
    assert run.parent == out / "gan" / "all"
    meta = json.loads((run / "config.json").read_text())
    assert meta["cls"] == "all" and meta["classes"] == list(CLASSES) and meta["total_steps"] == 6
    assert meta["data"]["n_images"] == 60 and set(meta["data"]["n_images_per_class"].values()) == {12}
    gcfg = json.loads((run / "generator" / "config.json").read_text())
    assert gcfg["classes"] == list(CLASSES) and gcfg["cls"] == "all"
    # the sample grid has one row of 8 per class
    from PIL import Image

    w, h = Image.open(run / "samples" / "step_000006.png").size
    assert (w, h) == (8 * 130 + 2, 5 * 130 + 2)
    assert find_runs(out) == {c: run for c in CLASSES}
    assert find_runs(run) == {c: run for c in CLASSES}
    assert find_runs(run / "generator") == {c: run / "generator" for c in CLASSES}
    # balanced order: every class drawn equally often, whatever its count
    from wbcgen.gan.order import BalancedOrder

    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 7)
    idx = BalancedOrder(labels, 3, seed=1).next(300)
    assert torch.bincount(labels[idx]).tolist() == [100, 100, 100]


def test_grouped_balanced_order_gives_same_class_runs_and_resumes():
    """class_group 4: every run of 4 consecutive indices is one class (D's minibatch-stddev
    groups then see within-class variety), classes stay balanced, and a restored order draws
    exactly what the uninterrupted one would."""
    from wbcgen.gan.order import BalancedOrder

    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 7)
    o = BalancedOrder(labels, 3, seed=1, group=4)
    idx = torch.cat([o.next(64) for _ in range(3)])            # 48 runs of 4 = 16 cycles of the 3 classes
    runs = labels[idx].view(-1, 4)
    assert bool((runs == runs[:, :1]).all())
    assert torch.bincount(labels[idx]).tolist() == [64, 64, 64]
    assert len(set(idx[labels[idx] == 1].tolist())) == 3        # the 3-image class cycles through its images
    state = o.state_dict()
    ahead = o.next(64)
    o2 = BalancedOrder(labels, 3, seed=1, group=4)
    o2.load_state_dict(state)
    assert torch.equal(o2.next(64), ahead)
    assert not torch.equal(BalancedOrder(labels, 3, seed=1).next(64), BalancedOrder(labels, 3, seed=1, group=4).next(64))
    from wbcgen.gan import load_config

    assert load_config("cond").replace(class_group=4).class_group == 4
    for bad in (dict(class_group=4), dict(conditional=True, class_group=5), dict(conditional=True, class_group=0)):
        with pytest.raises(UserError, match="class_group must be 1"):
            load_config("fast").replace(**bad)


def test_collapse_check_is_per_class_for_a_conditional_model(cells, monkeypatch):
    """One cell per class is a collapsed conditional generator although the five cells differ
    from each other: the diversity ratio is the worst class's, within the class."""
    from wbcgen.gan import ddp
    from wbcgen.gan.trainer import Trainer

    tr = Trainer(TINY_COND, cells.images, 0, ddp.Dist(), labels=cells.labels, classes=list(CLASSES))
    n = tr.cfg.eval_n
    y = tr.eval_y[:n]
    one_each = torch.stack([cells.images[cells.labels == c][0] for c in range(len(CLASSES))]).float() / 255
    monkeypatch.setattr(tr, "generate_eval", lambda n_: one_each[y[:n_]])
    ev = tr.evaluate()
    assert ev["collapsed"] and ev["diversity_ratio"] == 0.0
    # real cells of the asked classes: as diverse as the real reference, class by class
    per = [cells.images[cells.labels == c] for c in range(len(CLASSES))]
    reals = torch.stack([per[c][i // len(CLASSES) % len(per[c])] for i, c in enumerate(y.tolist())]).float() / 255
    monkeypatch.setattr(tr, "generate_eval", lambda n_: reals[:n_])
    ev = tr.evaluate()
    assert not ev["collapsed"] and ev["diversity_ratio"] > 0.9


def test_mode_seeking_loss_acts_on_same_class_pairs(cells):
    """ms_weight: G's loss gains weight / (|G(z1)-G(z2)| / |z1-z2|) over consecutive same-class
    pairs; it needs pairs of one class (an even class_group) in a conditional model."""
    from wbcgen.gan import ddp
    from wbcgen.gan.trainer import Trainer

    with pytest.raises(UserError, match="ms_weight"):
        TINY_COND.replace(ms_weight=1.0)                      # interleaved classes: pairs differ
    with pytest.raises(UserError, match="ms_weight"):
        TINY_COND.replace(ms_weight=-1.0, class_group=2)
    base = TINY_COND.replace(class_group=2, batch_size=8)
    runs = {}
    for w in (0.0, 1.0):
        tr = Trainer(base.replace(ms_weight=w), cells.images, 0, ddp.Dist(), labels=cells.labels, classes=list(CLASSES))
        logs = [tr.train_step() for _ in range(2)]
        runs[w] = (tr, logs)
    (t0, l0), (t1, l1) = runs[0.0], runs[1.0]
    # same seed, same first D step; G's loss is larger by the mode-seeking term (> 1 when G is near-constant)
    assert float(l1[0]["loss_d"]) == pytest.approx(float(l0[0]["loss_d"]), rel=1e-6)
    assert float(l1[0]["loss_g"]) > float(l0[0]["loss_g"]) + 1.0
    assert all(torch.isfinite(torch.stack([v for d in l1 for v in d.values()])))
    w0, w1 = dict(t0.G.named_parameters()), dict(t1.G.named_parameters())
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)   # the term moved G


def test_sample_one_class_from_a_conditional_run_is_deterministic(cond_run, tmp_path):
    out, run = cond_run
    r = CliRunner()
    for name in ("a", "b"):
        res = r.invoke(main, ["sample", "-n", "3", "--cls", "basophil", "--from", str(run),
                              "--out", str(tmp_path / name), "--quiet"])
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "basophil", "generation.json", "metadata.csv", "train_images.csv"]
    gen = json.loads((tmp_path / "a" / "generation.json").read_text())["generators"]
    assert list(gen) == ["basophil"] and gen["basophil"]["n_train_images"] == 60  # all classes' images
    rows = list(csv.DictReader(open(tmp_path / "a" / "metadata.csv")))
    assert [r_["label"] for r_ in rows] == ["basophil"] * 3
    assert rows[0]["generator_sha256"] == json.loads((run / "summary.json").read_text())["generator_sha256"]
    for f in ("basophil_000000.png", "basophil_000002.png"):
        assert (tmp_path / "a" / "basophil" / f).read_bytes() == (tmp_path / "b" / "basophil" / f).read_bytes()
    # all classes from the runs root: five folders; the basophils are the same files
    res = r.invoke(main, ["sample", "-n", "3", "--from", str(out), "--out", str(tmp_path / "all"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if p.is_dir()) == sorted(CLASSES)
    assert (tmp_path / "all" / "basophil" / "basophil_000001.png").read_bytes() == \
        (tmp_path / "a" / "basophil" / "basophil_000001.png").read_bytes()
    g = load_generator(run, cls="lymphocyte")
    assert isinstance(g, ClassGenerator) and g.config["cls"] == "lymphocyte" and len(g.weights_sha256) == 64


def test_conditional_resume_after_a_kill_is_bit_identical(cells, tmp_path, monkeypatch):
    cfg = TINY_COND.replace(ckpt_every=4)
    full = train_gan(cells, "all", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    kill_during_step_7(monkeypatch, cells, "all", cfg, tmp_path / "b", seed=5)
    resumed = train_gan(cells, "all", out_root=tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(full / "checkpoints" / "latest.safetensors")
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors")
    assert a["step"] == b["step"] == 8
    for part in ("G", "D", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["data"]["per"]["2"]["pos"] == b["data"]["per"]["2"]["pos"]


def test_minutes_budget_stops_near_it_and_resume_continues_by_steps(cells, tmp_path):
    budget = 0.05  # 3 s
    t0 = time.perf_counter()
    run = train_gan(cells, "basophil", config="tiny", out_root=tmp_path / "m", minutes=budget, seed=2,
                    progress=False)
    wall = time.perf_counter() - t0
    assert 3.0 <= wall < 3.0 + 30, wall  # stops at the first step past the budget (+ export; a loaded CPU)
    meta, summary = (json.loads((run / f).read_text()) for f in ("config.json", "summary.json"))
    s = meta["total_steps"]
    assert s >= 1 and summary["steps"] == s
    assert meta["budget"] == [{"minutes": budget, "stopped_at_step": s, "stopped_by": "minutes"}]
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log) == s and load_checkpoint(run / "checkpoints" / "latest.safetensors")["step"] == s
    # a plain --resume has nothing left to do; --steps continues by steps, and equals an unbudgeted run
    assert train_gan(cells, "basophil", out_root=tmp_path / "m", resume=run, progress=False) == run
    assert json.loads((run / "summary.json").read_text())["steps"] == s
    train_gan(cells, "basophil", out_root=tmp_path / "m", resume=run, steps=s + 2, progress=False)
    ref = train_gan(cells, "basophil", config="tiny", out_root=tmp_path / "r", steps=s + 2, seed=2, progress=False)
    a = load_checkpoint(ref / "checkpoints" / "latest.safetensors")
    b = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert a["step"] == b["step"] == s + 2
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    assert json.loads((run / "config.json").read_text())["total_steps"] == s + 2


def test_max_steps_caps_a_minutes_budget_and_a_resume_goes_past_it(cells, tmp_path):
    cfg = load_config("tiny").replace(max_steps=2)
    run = train_gan(cells, "basophil", config=cfg, out_root=tmp_path, minutes=5, seed=2, progress=False)
    meta = json.loads((run / "config.json").read_text())
    assert meta["total_steps"] == 2 and json.loads((run / "summary.json").read_text())["steps"] == 2
    assert meta["budget"] == [{"minutes": 5, "stopped_at_step": 2, "stopped_by": "steps"}]
    # --steps/--epochs are not capped; a resume at the cap trains the minutes past it
    assert json.loads((train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "s", steps=3, seed=2, progress=False)
                       / "summary.json").read_text())["steps"] == 3
    train_gan(cells, "basophil", out_root=tmp_path, resume=run, minutes=0.02, progress=False)
    assert json.loads((run / "config.json").read_text())["budget"][1]["stopped_by"] == "minutes"
    with pytest.raises(UserError, match="max_steps must be >= 0"):
        load_config("tiny").replace(max_steps=-1)


def test_cli_minutes_shared_over_classes_and_cond_errors(pbc_small, tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["train-gan", "--cls", "basophil,monocyte", "--config", "tiny", "--minutes", "0.1",
                          "--data", str(pbc_small), "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    shares = [json.loads(next((tmp_path / "gan" / c).iterdir()).joinpath("config.json").read_text())["budget"][0]
              for c in ("basophil", "monocyte")]
    # each run gets an equal part of what is left: the first half of the budget less the microseconds
    # between reading the clock for the deadline and for its share, the second what the first left over
    assert shares[0]["minutes"] == pytest.approx(0.05, abs=1e-4) and 0 < shares[1]["minutes"] <= 0.05
    assert all(s["stopped_by"] == "minutes" for s in shares)
    assert "use --cls all" in _one_line_error(r.invoke(main, ["train-gan", "--cls", "basophil", "--config", "cond",
                                                              "--data", str(pbc_small), "--out", str(tmp_path)]))
    assert "--minutes must be positive" in _one_line_error(
        r.invoke(main, ["train-gan", "--cls", "basophil", "--minutes", "0", "--data", str(pbc_small)]))


def test_push_dry_run_of_a_conditional_run_is_one_model(cond_run, tmp_path):
    from wbcgen.hub import load_generator_from_hub, push, resolve_generators

    out, run = cond_run
    repo = tmp_path / "repo"
    res = push(out, "me/wbc-cond", dry_run=True, to=repo, progress=False)
    assert res["kind"] == "gan"
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    assert [f for f in files if "/" in f] == ["all/config.json", "all/model.safetensors", "all/run_config.json",
                                              "all/samples.png", "all/train_images.csv"]
    # the card describes one class-conditional model and its classes with their training images
    card = (repo / "README.md").read_text()
    assert "One class-conditional DCGAN generator" in card and "Per-class" not in card
    assert "one generator per cell class" not in card and "neutrophil, eosinophil, basophil, lymphocyte, monocyte" in card
    assert all(f"| {c} | 12 |" in card for c in CLASSES) and "| `all/` | 60 (neutrophil 12," in card
    lean = (repo / "all" / "train_images.csv").read_text().splitlines()
    assert lean[0] == "sha256,label" and len(lean) == 61 and "/" not in "".join(lean)
    # a set sampled from the repo records the one list for every class; its card says conditional
    res = CliRunner().invoke(main, ["sample", "-n", "2", "--from", str(repo), "--out", str(tmp_path / "syn"),
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    gen = json.loads((tmp_path / "syn" / "generation.json").read_text())["generators"]
    assert all(gen[c]["n_train_images"] == 60 and gen[c]["data_source"] == "pbc" for c in CLASSES)
    push(tmp_path / "syn", "me/wbc-cond-cells", dry_run=True, to=tmp_path / "ds", progress=False)
    ds_card = (tmp_path / "ds" / "README.md").read_text()
    assert "a class-conditional DCGAN (one model for all classes)" in ds_card and "| basophil | 60 |" in ds_card
    assert resolve_generators(repo) == {c: repo / "all" for c in CLASSES}
    assert find_runs(repo) == {c: repo / "all" for c in CLASSES}
    G = load_generator_from_hub(repo, "basophil")
    local = load_generator(run, cls="basophil")
    assert isinstance(G, ClassGenerator)
    assert torch.equal(generate(G, 2, seed=1), generate(local, 2, seed=1))


def test_report_of_a_conditional_run(cond_run, pbc_small, tmp_path):
    out, run = cond_run
    res = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "r.html"), "--real", str(pbc_small)])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r.html").read_text()
    assert "real neutrophil, eosinophil, basophil, lymphocyte, monocyte: 60 of the run&#x27;s 60 training images" in html
    assert "step_000006.png" in html


def test_ada_steers_the_augmentation_probability_and_resumes_bit_identically(cells, tmp_path, monkeypatch):
    from wbcgen.gan.diffaug import diff_augment

    x = torch.rand(6, 3, 128, 128) * 2 - 1
    assert torch.equal(diff_augment(x, "color,cutout", 0.0), x)
    torch.manual_seed(1)
    a = diff_augment(x, "color,cutout", 1.0)
    torch.manual_seed(1)
    assert torch.equal(a, diff_augment(x, "color,cutout"))  # p = 1 is plain DiffAugment, same RNG draws
    with pytest.raises(UserError, match="ada_target"):
        load_config("tiny").replace(ada_target=1.5)
    cfg = load_config("tiny").replace(ada_target=0.6, ada_interval=2, ada_kimg=0.05, ckpt_every=4)
    full = train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "a", steps=8, seed=4, progress=False)
    log = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines() if '"loss_d"' in x]
    ps = [r["ada_p"] for r in log]
    assert all(0 <= p <= 1 for p in ps) and len(set(ps)) > 1  # p moved from 0, within [0, 1]
    assert all(r["ada_rt"] is None or -1 <= r["ada_rt"] <= 1 for r in log)
    kill_during_step_7(monkeypatch, cells, "basophil", cfg, tmp_path / "b", seed=4)
    resumed = train_gan(cells, "basophil", out_root=tmp_path / "b", resume=True, progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "latest.safetensors") for r in (full, resumed))
    assert a["ada"]["p"] == b["ada"]["p"] and all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])


def test_cli_resume_cls_all_continues_the_conditional_run(cond_run, pbc_small, tmp_path):
    import shutil

    out, run = cond_run
    shutil.copytree(out, tmp_path / "runs")
    res = CliRunner().invoke(main, ["train-gan", "--cls", "all", "--resume", "--steps", "7", "--quiet",
                                    "--data", str(pbc_small), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    (copy,) = (tmp_path / "runs" / "gan" / "all").iterdir()
    assert json.loads((copy / "summary.json").read_text())["steps"] == 7
    assert not (tmp_path / "runs" / "gan" / "basophil").exists()  # no per-class runs were started


def test_train_size_generator_learns_64_px_and_emits_128(tmp_path, cells):
    """train_size = 64: G's layers end at 64 px + a fixed bilinear upsample to 128; D takes 128-px
    images and area-downsamples them first; save/load strict, folding and a resumed step stay exact."""
    from wbcgen.gan import ddp
    from wbcgen.gan.trainer import Trainer

    with pytest.raises(UserError, match="g_widths needs 4 entries"):
        TINY_COND.replace(train_size=64)                      # one upsampling fewer than at 128
    with pytest.raises(UserError, match="train_size"):
        TINY_COND.replace(train_size=48, g_widths=[32, 16, 8, 8])
    with pytest.raises(UserError, match="train_size"):
        load_config("paper").replace(train_size=64)
    cfg = TINY_COND.replace(train_size=64, g_widths=[32, 16, 8, 8], d_widths=[8, 16, 16, 32])
    torch.manual_seed(0)
    G, D = create_gan(cfg, classes=list(CLASSES))
    assert all(b[0].out_channels != 4 for b in G.blocks) and len(G.blocks) == 3
    z, y = torch.randn(10, G.z_dim), torch.arange(10) % 5
    G.eval()
    with torch.no_grad():
        x = G(z, y)
        assert x.shape == (10, 3, 128, 128) and 0 <= float(x.min()) and float(x.max()) <= 1
        # the 128-px image is the bilinear upsample of a 64-px one: area-downsampling gives it back closely
        small = torch.nn.functional.avg_pool2d(x, 2)
        up = torch.nn.functional.interpolate(small, size=(128, 128), mode="bilinear", align_corners=False)
        assert float((up - x).abs().max()) < 0.1
        assert D(x * 2 - 1, y).shape == (10, 1)
        # D sees a 64-px image: a 2x2-constant perturbation of zero mean per block changes nothing
        checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(64, 64) * 0.3
        torch.testing.assert_close(D(x * 2 - 1 + checker, y), D(x * 2 - 1, y), atol=1e-5, rtol=1e-5)
        G.save_pretrained(tmp_path / "g")
        H = Generator.from_pretrained(tmp_path / "g", strict=True).eval()
        assert torch.equal(H(z, y), x)
        torch.testing.assert_close(H.for_class("basophil").folded()(z), G(z, torch.full((10,), 2)),
                                   atol=2e-5, rtol=1e-4)
        # the per-class (unconditional) family too
        U, _ = create_gan(load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8]))
        U.eval()
        assert U(z).shape == (10, 3, 128, 128)
        torch.testing.assert_close(U.folded()(z), U(z), atol=2e-5, rtol=1e-4)
    tr = Trainer(cfg, cells.images, 0, ddp.Dist(), labels=cells.labels, classes=list(CLASSES))
    logs = [tr.train_step() for _ in range(2)]
    assert all(torch.isfinite(torch.stack([v for d in logs for v in d.values()])))


def test_learnt_selection_proxy_scores_classes_and_resumes_bit_identically(cells, tmp_path, monkeypatch):
    """select = "learnt": a classifier of the run's own images gives the proxy — per-class FD and how
    often the fakes are seen as their asked class; it travels in the checkpoint, so resume is exact."""
    from wbcgen.gan import ddp
    from wbcgen.gan.trainer import Trainer

    with pytest.raises(UserError, match="select"):
        TINY_COND.replace(select="fid")
    cfg = TINY_COND.replace(select="learnt", feat_steps=40, feat_widths=[8, 16, 16, 32], ckpt_every=4)
    tr = Trainer(cfg, cells.images, 0, ddp.Dist(), labels=cells.labels, classes=list(CLASSES))
    assert tr.feature_net_info["steps"] == 40 and tr.proxy_net is not None
    assert not any(p.requires_grad for p in tr.proxy_net.parameters())
    y = tr.eval_y[:cfg.eval_n]
    per = [cells.images[cells.labels == c] for c in range(len(CLASSES))]
    reals = torch.stack([per[c][i // len(CLASSES) % len(per[c])] for i, c in enumerate(y.tolist())]).float() / 255
    monkeypatch.setattr(tr, "generate_eval", lambda n_: reals[:n_])
    good = tr.evaluate()
    # real cells under the wrong class labels: per-class FD and class_acc worse
    swapped = torch.stack([per[(c + 1) % 5][i // 5 % len(per[(c + 1) % 5])] for i, c in enumerate(y.tolist())]).float() / 255
    monkeypatch.setattr(tr, "generate_eval", lambda n_: swapped[:n_])
    bad = tr.evaluate()
    assert good["fd"] < bad["fd"] and good["class_acc"] > bad["class_acc"]
    monkeypatch.undo()
    full = train_gan(cells, "all", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    kill_during_step_7(monkeypatch, cells, "all", cfg, tmp_path / "b", seed=5)
    resumed = train_gan(cells, "all", out_root=tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(full / "checkpoints" / "latest.safetensors")
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors")
    for part in ("G", "D", "ema", "proxy"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    evals = [json.loads(line)["eval"] for line in open(full / "log.jsonl") if '"eval"' in line]
    assert evals and all({"fd", "fd_all", "class_acc"} <= set(e) for e in evals)


def test_pooled_discriminator_head_sums_space_before_the_projection():
    """d_head = "pool": ψ and the class projection act on the spatial SUM of D's last features
    (SNGAN/BigGAN), so shuffling the last map's positions leaves the logit unchanged."""
    with pytest.raises(UserError, match="d_head"):
        TINY_COND.replace(d_head="mean")
    cfg = TINY_COND.replace(d_head="pool")
    torch.manual_seed(0)
    _, D = create_gan(cfg, classes=list(CLASSES))
    _, F = create_gan(TINY_COND, classes=list(CLASSES))
    assert D.head.in_features == cfg.d_widths[-1] and F.head.in_features == cfg.d_widths[-1] * 16
    x, y = torch.rand(6, 3, 128, 128) * 2 - 1, torch.arange(6) % 5
    D.eval()
    with torch.no_grad():
        h = D.features(x)
        perm = torch.randperm(h.shape[2] * h.shape[3])
        shuffled = h.flatten(2)[:, :, perm].view_as(h)
        D.features = torch.nn.Sequential(torch.nn.Identity())
        torch.testing.assert_close(D(h, y), D(shuffled, y))
        assert not torch.allclose(D(h, y), D(h, (y + 1) % 5))   # the label still counts


def test_cli_says_when_the_budget_stops_generators_before_the_cap(pbc_small, cells, tmp_path):
    from wbcgen.gan.runs import budget_shortfall, member_records

    cfg = tmp_path / "tinyx2.toml"
    cfg.write_text('base = "tiny"\nname = "tinyx2"\n[train]\nmembers = 2\nmax_steps = 100000\n')
    res = CliRunner().invoke(main, ["train-gan", "--cls", "basophil,monocyte", "--config", str(cfg), "--minutes",
                                    "0.1", "--data", str(pbc_small), "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    run, mono = (next((tmp_path / "o" / "gan" / c).iterdir()) for c in ("basophil", "monocyte"))
    recs = member_records(run)
    assert len(recs) == 2 and all(r["budget"][-1]["stopped_by"] == "minutes" for r in recs)
    s = budget_shortfall(run, 100000)
    assert s["steps"] == [r["steps"] for r in recs] and s["max_steps"] == 100000
    assert s["minutes"] == pytest.approx(sum(r["budget"][-1]["minutes"] for r in recs), abs=0.01)
    want = sum(r["budget"][-1]["minutes"] * 100000 / r["steps"] for r in recs)
    assert s["minutes_needed"] == pytest.approx(want, abs=0.1) and s["minutes_needed"] > 10 * s["minutes"]
    steps = "/".join(str(r["steps"]) for r in recs)
    assert f"basophil: the budget stopped its generator(s) at step {steps} of the config's 100000" in res.output
    both = s["minutes_needed"] + budget_shortfall(mono, 100000)["minutes_needed"]  # the whole command
    assert f"this CPU needs about --minutes {both:.0f} " in res.output and "monocyte: the budget stopped" in res.output
    # no shortfall: a cap the members reached, no cap, a run trained by --steps
    assert budget_shortfall(run, min(s["steps"])) is None and budget_shortfall(run, 0) is None
    stepped = train_gan(cells, "basophil", config="tiny", out_root=tmp_path / "s", steps=2, progress=False)
    assert member_records(stepped)[0]["steps"] == 2 and budget_shortfall(stepped, 450) is None
    with pytest.raises(UserError, match="no readable summary.json"):
        member_records(tmp_path)
