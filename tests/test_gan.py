"""Per-class DCGAN (issue 4): models, training run folders, resume, sampling, CLI errors, DDP."""
from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from classifiers.runtime import load_checkpoint
from wbcgen.cli import main
from wbcgen.data import load_cells
from wbcgen.gan import (PRESETS, Generator, create_gan, count_params, find_runs, generate, load_config, load_generator,
                        sample_to_folder, train_gan)
from wbcgen.gan import quality
from wbcgen.gan.models import UpConv2d
from wbcgen.gan.train import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def trained(cells, tmp_path_factory):
    """One short tiny-config run on real basophils, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("gan_runs")
    run = train_gan(cells, "basophil", config="tiny", out_root=out, steps=6, seed=3, progress=False)
    return out, run


# ---------------------------------------------------------------------------- models


def test_paper_parameter_counts_are_exact():
    G, D = create_gan("paper")
    assert count_params(G) == 2_780_099
    assert count_params(D) == 69_878_401
    convs = [m for m in G.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 6 and all(m.kernel_size == (5, 5) and m.bias is not None for m in convs)
    assert [m.out_channels for m in convs] == [128, 64, 32, 16, 8, 3]
    dconvs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.stride[0] for m in dconvs] == [2, 2, 2, 2, 2, 1]
    assert [m.out_channels for m in dconvs] == [64, 128, 256, 512, 1024, 2048]


@pytest.mark.parametrize("name", ["paper", "fast", "fast64", "tiny"])
def test_generator_output_range_and_discriminator_logits(name):
    torch.manual_seed(0)
    G, D = create_gan(name)
    z = torch.randn(2, G.z_dim)
    x = G(z)
    assert x.shape == (2, 3, 128, 128) and x.min() >= 0 and x.max() <= 1
    assert D(x * 2 - 1).shape == (2, 1)


@pytest.mark.parametrize("mode,margin", [("zeros", 0), ("replicate", 0), ("replicate", 1), ("replicate", 2)])
def test_upconv_is_upsample_then_conv_in_values_and_gradients(mode, margin):
    torch.manual_seed(0)
    u = UpConv2d(5, 7, mode, margin)
    x = torch.randn(2, 5, 6, 9, requires_grad=True)
    if mode == "zeros":
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), u.weight, u.bias, padding=1)
    else:  # input padded by 2 repeated pixels, upsampled, valid conv, keep `margin` extra pixels
        ref = F.conv2d(F.interpolate(F.pad(x, (2,) * 4, mode="replicate"), scale_factor=2, mode="nearest"),
                       u.weight, u.bias)[..., 3 - margin:15 + margin, 3 - margin:21 + margin]
    out = u(x)
    assert out.shape == (2, 7, 12 + 2 * margin, 18 + 2 * margin)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(out.square().sum(), [x, u.weight])
    g2 = torch.autograd.grad(ref.square().sum(), [x, u.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,change", [("paper", {}), ("fast", {}), ("fast64", {}), ("fast", {"g_blur": False}),
                                         ("fast", {"g_blur": False, "g_padding": "zeros"})])
def test_folded_generator_matches_eval_mode(name, change):
    torch.manual_seed(1)
    G, _ = create_gan(load_config(name).replace(**change))
    G.train()
    G(torch.randn(16, G.z_dim))  # give BN non-trivial running statistics
    G.eval()
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G.folded()(z), G(z), atol=2e-5, rtol=1e-4)


def test_recipes_mirror_presets():
    assert load_config(None).to_dict() == load_config("fast64x2").to_dict()   # the default
    for name in PRESETS:
        path = ROOT / "recipes" / f"dcgan-{name}.toml"
        assert load_config(str(path)).to_dict() == load_config(name).to_dict(), path


def test_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "fast"\n[train]\nbatchsize = 3\n')
    with pytest.raises(Exception, match="unknown GAN setting.*batchsize"):
        load_config(str(bad))


def test_quality_proxy_behaves(cells):
    real = cells.of_class("basophil").images
    f = quality.features(real)
    assert f.shape[0] == len(real) and torch.isfinite(f).all()
    same = quality.frechet_distance(*quality.stats(f), *quality.stats(f))
    dark = quality.features((real.float() * 0.5).to(torch.uint8))
    assert abs(same) < 1e-6
    assert quality.frechet_distance(*quality.stats(f), *quality.stats(dark)) > 1.0
    assert quality.diversity(f[:1].repeat(5, 1)) == 0.0 < quality.diversity(f)


# -------------------------------------------------------------------------- training


def test_training_on_real_basophils_writes_every_file(trained):
    out, run = trained
    assert run.parent == out / "gan" / "basophil"
    meta = json.loads((run / "config.json").read_text())
    assert meta["cls"] == "basophil" and meta["seed"] == 3 and meta["gan"]["name"] == "tiny"
    assert meta["data"]["n_images"] == 12 and len(meta["data"]["manifest_hash"]) == 64
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss_d" in r]
    assert [r["step"] for r in losses] == [2, 4, 6]
    assert all(r["loss_d"] > 0 and r["loss_g"] > 0 for r in losses)
    evals = [r for r in log if "eval" in r]
    assert [r["step"] for r in evals] == [5, 6] and all(r["eval"]["fd"] > 0 for r in evals)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000005.png", "step_000006.png"]
    latest = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert latest["step"] == 6 and latest["data"]["epoch"] == 4  # 6 steps × 8 images over 12 images
    for key in ("G", "D", "ema", "opt_g", "opt_d", "scaler", "rng", "rng_ranks", "best"):
        assert key in latest
    best = load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert best["step"] == latest["best"]["step"]
    gen = run / "generator"
    assert (gen / "model.safetensors").is_file()
    gcfg = json.loads((gen / "config.json").read_text())
    assert gcfg["cls"] == "basophil" and gcfg["step"] == best["step"] and gcfg["g_widths"] == [32, 16, 8, 8, 4]
    # the exported generator is the best checkpoint's EMA, loadable without any training state
    G = load_generator(gen)
    for k, v in best["ema"].items():
        torch.testing.assert_close(G.state_dict()[k], v, rtol=0, atol=0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and len(summary["generator_sha256"]) == 64


def test_resume_after_a_kill_continues_bit_identically(cells, tmp_path, monkeypatch):
    from evalkit import kill_during_step_7

    cfg = load_config("tiny").replace(ckpt_every=4)
    full = train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    kill_during_step_7(monkeypatch, cells, "basophil", cfg, tmp_path / "b", seed=5)
    (half,) = (tmp_path / "b" / "gan" / "basophil").iterdir()
    assert load_checkpoint(half / "checkpoints" / "latest.safetensors")["step"] == 4
    resumed = train_gan(cells, "basophil", out_root=tmp_path / "b", resume=True, progress=False)
    assert resumed == half
    a = load_checkpoint(full / "checkpoints" / "latest.safetensors")
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors")
    assert a["step"] == b["step"] == 8
    for part in ("G", "D", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k, st in a["opt_g"]["state"].items():
        assert torch.equal(st["exp_avg"], b["opt_g"]["state"][k]["exp_avg"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    la = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (resumed / "log.jsonl").read_text().splitlines()]
    # identical loss records (the stopped run also logged an extra eval at its last step)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("img_per_s", "time_s")} for r in rs if "loss_d" in r]  # noqa: E731
    assert len(strip(la)) == 4 and strip(la) == strip(lb)


def test_r1_penalty_adds_to_d_loss_on_its_steps(cells):
    from wbcgen.gan import ddp
    from wbcgen.gan.train import Trainer, class_images

    real = class_images(cells, "basophil")
    losses = {}
    for gamma in (0.0, 1000.0):
        tr = Trainer(load_config("tiny").replace(r1_gamma=gamma, r1_every=2), real, 0, ddp.Dist())
        losses[gamma] = [float(tr.train_step()["loss_d"]) for _ in range(2)]
    assert losses[1000.0][0] > losses[0.0][0] + 1e-4  # step 0: same batch, same z, plus the penalty
    assert all(torch.isfinite(torch.tensor(v)).all() for v in losses.values())


def test_nan_guard_stops_and_keeps_last_good_checkpoint(cells, tmp_path, monkeypatch):
    import wbcgen.gan.trainer as T  # where the training step lives

    real_aug, calls = T.diff_augment, {"n": 0}

    def poisoned(x, policy, p=1.0):
        calls["n"] += 1
        return real_aug(x, policy, p) * (float("nan") if calls["n"] > 3 * 6 else 1.0)  # 3 calls per step

    monkeypatch.setattr(T, "diff_augment", poisoned)
    cfg = load_config("tiny").replace(ckpt_every=3)
    with pytest.raises(TrainingDiverged, match="diverged at step 7.*last good checkpoint"):
        train_gan(cells, "basophil", config=cfg, out_root=tmp_path, steps=20, seed=0, progress=False)
    (run,) = (tmp_path / "gan" / "basophil").iterdir()
    ck = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert ck["step"] == 6 and all(torch.isfinite(v).all() for v in ck["G"].values())


# -------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_with_requested_layout(trained, tmp_path):
    out, run = trained
    assert find_runs(out) == {"basophil": run}
    assert find_runs(run) == {"basophil": run} == {k: v.parent for k, v in find_runs(run / "generator").items()}
    d1 = sample_to_folder(find_runs(out), 7, tmp_path / "s1", seed=11, batch_size=3, progress=False)
    d2 = sample_to_folder({"basophil": run / "generator"}, 7, tmp_path / "s2", seed=11, batch_size=3, progress=False)
    files = sorted((d1 / "basophil").iterdir())
    assert [f.name for f in files] == [f"basophil_{i:06d}.png" for i in range(7)]
    for f in files:
        assert f.read_bytes() == (d2 / "basophil" / f.name).read_bytes()
    rows = list(csv.DictReader(open(d1 / "metadata.csv")))
    assert list(rows[0]) == ["file_name", "label", "seed", "index", "generator_sha256"]
    assert [r["index"] for r in rows] == [str(i) for i in range(7)] and {r["label"] for r in rows} == {"basophil"}
    assert rows[0]["generator_sha256"] == json.loads((run / "summary.json").read_text())["generator_sha256"]
    back = load_cells(d1, progress=False)
    assert back.counts()["basophil"] == 7 and back.images.shape == (7, 3, 128, 128)
    G = load_generator(run)
    order = [int(Path(m["path"]).stem.split("_")[-1]) for m in back.manifest]
    assert torch.equal(back.images, generate(G, 7, seed=_class_seed(11), batch_size=3)[order])
    with pytest.raises(Exception, match="already holds a wbcgen sample dataset; pass --overwrite"):
        sample_to_folder(find_runs(out), 2, d1, seed=0, progress=False)


def test_sampling_depends_on_seed_and_index_only(tmp_path):
    """A generator whose output varies with z (a 6-step tiny G is still nearly constant)."""
    torch.manual_seed(0)
    G = Generator(load_config("tiny").to_dict() | {"cls": "eosinophil"})
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(0, 0.3)
    G.save_pretrained(tmp_path / "gen")
    gen = {"eosinophil": tmp_path / "gen"}
    a = sample_to_folder(gen, 6, tmp_path / "a", seed=1, batch_size=4, progress=False)
    b = sample_to_folder(gen, 11, tmp_path / "b", seed=1, batch_size=4, progress=False)
    c = sample_to_folder(gen, 6, tmp_path / "c", seed=2, batch_size=4, progress=False)
    names = [f"eosinophil/eosinophil_{i:06d}.png" for i in range(6)]
    blobs = {d: [(d / n).read_bytes() for n in names] for d in (a, b, c)}
    assert blobs[a] == blobs[b]  # same seed and batch size: same files, whatever -n
    assert all(x != y for x, y in zip(blobs[a], blobs[c]))  # another seed: other images
    assert len(set(blobs[a])) == 6  # every index its own latent
    assert find_runs(tmp_path / "gen") == {"eosinophil": tmp_path / "gen"}


def _class_seed(seed):
    from wbcgen.gan.sample import class_seed

    return class_seed(seed, "basophil")


# ----------------------------------------------------------------------- CLI errors


def _one_line_error(result):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_errors_are_one_clear_sentence(trained, tmp_path, pbc_small):
    out, run = trained
    r = CliRunner()
    assert "unknown class 'basofil'" in _one_line_error(r.invoke(main, ["sample", "--cls", "basofil", "--from", str(out)]))
    assert "unknown class 'basofil'" in _one_line_error(r.invoke(main, ["train-gan", "--cls", "basofil"]))
    assert "-n must be a positive" in _one_line_error(r.invoke(main, ["sample", "-n", "0", "--from", str(out)]))
    assert "does not exist" in _one_line_error(r.invoke(main, ["sample", "--from", str(tmp_path / "nope")]))
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "config.json").write_text((run / "generator" / "config.json").read_text())
    (bad / "model.safetensors").write_bytes((run / "generator" / "model.safetensors").read_bytes()[:300])
    msg = _one_line_error(r.invoke(main, ["sample", "-n", "2", "--from", str(bad), "--out", str(tmp_path / "o")]))
    assert "corrupt" in msg
    # a corrupt training checkpoint: --resume refuses it in one sentence
    import shutil

    shutil.copytree(out, tmp_path / "runs_copy")
    (copy,) = (tmp_path / "runs_copy" / "gan" / "basophil").iterdir()
    (copy / "checkpoints" / "latest.safetensors").write_bytes(b"\0" * 100)
    msg = _one_line_error(r.invoke(main, ["train-gan", "--cls", "basophil", "--resume", "--quiet",
                                          "--data", str(pbc_small), "--out", str(tmp_path / "runs_copy")]))
    assert "corrupt" in msg and "latest.safetensors" in msg


def test_cli_sample_defaults_to_newest_runs_under_cwd(trained, tmp_path, monkeypatch):
    out, run = trained
    monkeypatch.chdir(out.parent)
    (out.parent / "runs").symlink_to(out, target_is_directory=True)
    r = CliRunner().invoke(main, ["sample", "-n", "3", "--out", str(tmp_path / "ok"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "ok" / "basophil").glob("*.png"))) == 3
    assert not (tmp_path / "ok" / "eosinophil").exists()


def test_collapse_warning(cells, tmp_path, capfd):
    """A barely trained tiny G makes (nearly) identical images: the warning must say so."""
    cfg = load_config("tiny").replace(eval_every=2)
    run = train_gan(cells, "basophil", config=cfg, out_root=tmp_path, steps=4, seed=0, progress=False)
    evals = [json.loads(x)["eval"] for x in (run / "log.jsonl").read_text().splitlines() if "eval" in x]
    assert evals[-1]["collapsed"] and evals[-1]["diversity_ratio"] < 0.35
    assert "samples look collapsed at step 4" in capfd.readouterr().err


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank, world, port, data_dir, out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cells = load_cells(data_dir, progress=False)
    run = train_gan(cells, "basophil", config="tiny", out_root=out, steps=4, seed=0, progress=False, device="cpu")
    results[rank] = str(run)


def test_two_process_gloo_ddp_trains_and_saves_once(pbc_small, tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, str(pbc_small), str(tmp_path), results), nprocs=2, join=True)
    assert results[0] == results[1]
    runs = list((tmp_path / "gan" / "basophil").iterdir())
    assert len(runs) == 1 and Path(results[0]) == runs[0]
    meta = json.loads((runs[0] / "config.json").read_text())
    assert meta["world_size"] == 2
    ck = load_checkpoint(runs[0] / "checkpoints" / "latest.safetensors")
    assert ck["step"] == 4 and len(ck["rng_ranks"]) == 2 and not torch.equal(*ck["rng_ranks"])
    log = [json.loads(x) for x in (runs[0] / "log.jsonl").read_text().splitlines() if "loss_d" in x]
    assert [r["step"] for r in log] == [2, 4]  # written once, by rank 0
    assert len(list(runs[0].rglob("*.tmp"))) == 0 and (runs[0] / "generator" / "model.safetensors").is_file()


def test_noise_injection_is_a_seeded_function_of_z(cells, tmp_path, monkeypatch):
    """g_noise: per-pixel noise after the BN of G's last blocks, with learnt strengths starting at 0.
    Trained on real basophils the strengths move; the noise is a function of each latent, so an
    image does not depend on its batch, the folded copy draws the same images, sampling is
    reproducible, a saved generator reloads strictly, and resuming is bit-identical."""
    from evalkit import kill_during_step_7
    from wbcgen.gan.models import NoiseInject

    cfg = load_config("tiny").replace(g_noise=2, ckpt_every=4)
    with pytest.raises(Exception, match="g_noise"):
        load_config("paper").replace(g_noise=1)
    full = train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    G = load_generator(full)
    noise = [m for m in G.modules() if isinstance(m, NoiseInject)]
    assert len(noise) == 2 and all(m.strength.abs().max() > 0 for m in noise)   # learnt from 0
    z = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = G(z)
        torch.testing.assert_close(G(z[2:4]), x[2:4], atol=1e-6, rtol=0)          # batch-independent
        torch.testing.assert_close(G.folded()(z), x, atol=2e-5, rtol=1e-4)
        learnt = [m.strength.clone() for m in noise]
        for m in noise:
            m.strength.fill_(5.0)                                            # make the noise visible
        y, y2, other = G(z), G(z), G(torch.randn(6, G.z_dim))
        for m, v in zip(noise, learnt):
            m.strength.copy_(v)
    # same z, same noise; at strength 5 the noise moves pixels at least half as much as another z does
    assert torch.equal(y, y2) and (y - x).abs().mean() > 0.5 * (other - y).abs().mean() > 0
    assert torch.equal(generate(G, 5, seed=2)[:3], generate(G, 3, seed=2))
    G.save_pretrained(tmp_path / "gen")
    H = Generator.from_pretrained(tmp_path / "gen", strict=True).eval()
    assert torch.equal(generate(H, 3, seed=2), generate(G, 3, seed=2))
    kill_during_step_7(monkeypatch, cells, "basophil", cfg, tmp_path / "b", seed=5)
    monkeypatch.undo()
    resumed = train_gan(cells, "basophil", out_root=tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(full / "checkpoints" / "latest.safetensors")
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors")
    for part in ("G", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
