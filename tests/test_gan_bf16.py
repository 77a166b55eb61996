"""cpu_bf16: bf16 autocast for GAN training on CPUs with native bf16 (real pbc-dev basophils)."""
from __future__ import annotations

import json

import torch

from classifiers.runtime import cpu_has_bf16, load_checkpoint
from wbcgen.gan import load_config, train_gan
from wbcgen.gan.train import train_precision


def _g(run):
    return load_checkpoint(run / "checkpoints" / "latest.safetensors")["G"]


def test_precision_follows_the_flag_the_device_and_the_cpu(monkeypatch):
    cfg = load_config("fast64")
    assert cfg.cpu_bf16 is False and load_config("fast64x2").cpu_bf16 is True
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train_precision(cfg, cpu) == "fp32" and train_precision(cfg, cuda) == "bf16"
    assert train_precision(cfg.replace(amp=False), cuda) == "fp32"
    import classifiers.runtime as rt

    for native in (True, False):
        monkeypatch.setattr(rt, "_CPU_BF16", native)
        assert train_precision(cfg.replace(cpu_bf16=True), cpu) == ("bf16" if native else "fp32")
    assert train_precision(cfg.replace(cpu_bf16=True, amp=False), cpu) == "fp32"


def test_cpu_bf16_run_resumes_bit_identically_repeats_and_records_its_precision(cells, tmp_path, monkeypatch):
    """8 steps on real basophils with cpu_bf16: a run killed during step 7 and resumed ends with the
    same G, D and EMA as the uninterrupted one; config.json says what the steps computed in; on a
    CPU with native bf16 the weights differ from the fp32 run of the same seed (the flag is live)."""
    from evalkit import resume_matches_uninterrupted

    cfg = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], cpu_bf16=True, ckpt_every=4)
    full, _ = resume_matches_uninterrupted(monkeypatch, cells, "basophil", cfg, tmp_path, ("G", "D", "ema"))
    meta = json.loads((full / "config.json").read_text())
    assert meta["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert meta["gan"]["cpu_bf16"] is True
    plain = train_gan(cells, "basophil", config=cfg.replace(cpu_bf16=False), out_root=tmp_path / "fp32", steps=8,
                      seed=5, progress=False)
    assert json.loads((plain / "config.json").read_text())["precision"] == "fp32"
    a, b = _g(full), _g(plain)
    differ = any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert differ == cpu_has_bf16()  # without native bf16 the flag trains in fp32: the same weights


def test_ensemble_records_its_members_precision(cells, tmp_path):
    """The ensemble's own config.json says what its members' steps computed in, as theirs do."""
    cfg = load_config("tiny").replace(members=2, name="tinyens", cpu_bf16=True)
    run = train_gan(cells, "eosinophil", config=cfg, out_root=tmp_path, steps=2, seed=1, progress=False)
    want = "bf16" if cpu_has_bf16() else "fp32"
    assert json.loads((run / "config.json").read_text())["precision"] == want
    for j in (0, 1):
        member = run / "members" / "gan" / "eosinophil" / f"m{j}" / "config.json"
        assert json.loads(member.read_text())["precision"] == want
