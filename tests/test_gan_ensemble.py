"""GAN ensembles (``members = k``, issue 12): k independently trained generators per class, sampled
as one — run layout, strict round-trip, each cell drawn by one member, resume after a kill, push
layout, ``sample`` of the run. Real pbc-dev images, tiny widths."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from classifiers.runtime import UserError, load_checkpoint
from wbcgen.cli import main
from wbcgen.data import CLASSES
from wbcgen.gan import Generator, find_runs, generate, load_config, load_generator, train_gan
from wbcgen.gan.models import member_index
from wbcgen.gan.sample import latents

from evalkit import kill_during_step_7

TINY_ENS = load_config("tiny").replace(members=2, name="tinyens")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def ens_run(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("ens_runs")
    run = train_gan(cells, "basophil", config=TINY_ENS, out_root=out, steps=6, seed=3, progress=False)
    return out, run


def _members(run):
    return [run / "members" / "gan" / "basophil" / f"m{j}" for j in (0, 1)]


def test_ensemble_run_holds_independent_members_and_round_trips_strictly(ens_run, tmp_path):
    out, run = ens_run
    meta = json.loads((run / "config.json").read_text())
    assert meta["kind"] == "wbcgen-gan-run" and meta["ensemble"] and meta["gan"]["members"] == 2
    assert meta["member_seeds"] == [3, 4] and meta["steps"] == 6
    m0, m1 = _members(run)
    assert [json.loads((m / "config.json").read_text())["seed"] for m in (m0, m1)] == [3, 4]
    assert [json.loads((m / "config.json").read_text())["gan"]["members"] for m in (m0, m1)] == [1, 1]
    # the ensemble says what its members' steps computed in (TINY_ENS: fp32 on the CPU)
    assert [json.loads((m / "config.json").read_text())["precision"] for m in (m0, m1)] == [meta["precision"]] * 2
    assert meta["precision"] == "fp32"
    assert find_runs(out) == {"basophil": run}  # the members are not runs of their own at the top
    summary = json.loads((run / "summary.json").read_text())
    assert [m["steps"] for m in summary["members"]] == [6, 6] and summary["n_train_images"] == 12
    assert (run / "samples" / "ensemble.png").is_file()
    G, a, b = load_generator(run), load_generator(m0), load_generator(m1)
    assert not torch.equal(a.fc.weight, b.fc.weight)  # different seeds, different generators
    assert torch.equal(G.members[0].fc.weight, a.fc.weight) and torch.equal(G.members[1].fc.weight, b.fc.weight)
    G.save_pretrained(tmp_path / "g")
    G2 = Generator.from_pretrained(tmp_path / "g", strict=True)
    assert G2.state_dict().keys() == G.state_dict().keys()
    assert all(torch.equal(v, G2.state_dict()[k]) for k, v in G.state_dict().items())
    with pytest.raises(Exception):  # a per-class generator's weights do not load into an ensemble
        Generator.from_pretrained(m0 / "generator", strict=True).load_state_dict(G.state_dict(), strict=True)


def test_each_cell_is_drawn_by_the_member_its_latent_names():
    torch.manual_seed(0)
    G = Generator(TINY_ENS.to_dict() | {"cls": "basophil"}).eval()
    with torch.no_grad():  # a few training steps leave tiny members nearly blank: make them draw
        for p in G.parameters():
            p.normal_(0, 0.3)
    z = latents(40, G.z_dim, seed=1)
    idx = member_index(z, 2)
    assert 8 < int(idx.sum()) < 32  # both members draw cells
    assert torch.equal(idx, member_index(z.clone(), 2))
    with torch.no_grad():
        x = G(z)
        for j in (0, 1):
            assert torch.allclose(x[idx == j], G.members[j](z[idx == j]), atol=1e-6)
        assert not torch.allclose(G.members[0](z), G.members[1](z), atol=1e-2)
    # the folded sampler: the same cells, whatever n (a cell's member depends on its latent only)
    cells = generate(G, 40, seed=1)
    assert (cells.float() / 255 - x).abs().max() <= 1 / 255 + 1e-4
    assert torch.equal(generate(G, 10, seed=1), cells[:10])


def test_sample_and_push_treat_an_ensemble_run_as_one_generator(ens_run, tmp_path):
    from wbcgen.hub import load_generator_from_hub, push

    out, run = ens_run
    res = CliRunner().invoke(main, ["sample", "-n", "4", "--from", str(out), "--out", str(tmp_path / "syn"),
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "syn" / "metadata.csv")))
    summary = json.loads((run / "summary.json").read_text())
    assert [r["label"] for r in rows] == ["basophil"] * 4
    assert {r["generator_sha256"] for r in rows} == {summary["generator_sha256"]}
    gen = json.loads((tmp_path / "syn" / "generation.json").read_text())["generators"]["basophil"]
    assert gen["n_train_images"] == 12 and gen["data_source"] == "pbc" and gen["run_config"]["ensemble"]
    repo = tmp_path / "repo"
    push(out, "me/wbc-ens", dry_run=True, to=repo, progress=False)
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file() and "/" in str(p.relative_to(repo)))
    assert files == ["basophil/config.json", "basophil/model.safetensors", "basophil/run_config.json",
                     "basophil/samples.png", "basophil/train_images.csv"]
    assert json.loads((repo / "basophil" / "config.json").read_text())["members"] == 2
    assert "members 2" in (repo / "README.md").read_text()  # the card says it is an ensemble
    G = load_generator_from_hub(repo, "basophil")
    assert torch.equal(generate(G, 6, seed=2), generate(load_generator(run), 6, seed=2))


def test_ensemble_resumes_after_a_kill_bit_identically(cells, tmp_path, monkeypatch):
    cfg = TINY_ENS.replace(ckpt_every=4)
    full = train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    kill_during_step_7(monkeypatch, cells, "basophil", cfg, tmp_path / "b", seed=5)  # member 0 dies
    run = next((tmp_path / "b" / "gan" / "basophil").iterdir())
    assert not (run / "generator").exists() and not _members(run)[1].exists()
    with pytest.raises(UserError, match="has no generator"):
        load_generator(run)
    resumed = train_gan(cells, "basophil", out_root=tmp_path / "b", resume=True, progress=False)
    assert resumed == run
    for ma, mb in zip(_members(full), _members(resumed)):
        a = load_checkpoint(ma / "checkpoints" / "latest.safetensors")
        b = load_checkpoint(mb / "checkpoints" / "latest.safetensors")
        assert a["step"] == b["step"] == 8
        assert all(torch.equal(a[p][k], b[p][k]) for p in ("G", "D", "ema") for k in a[p])
    assert torch.equal(generate(load_generator(full), 8, seed=0), generate(load_generator(resumed), 8, seed=0))
    with pytest.raises(UserError, match="nothing to resume"):  # finished: no unfinished ensemble, no plain run
        train_gan(cells, "basophil", out_root=tmp_path / "b", resume=True, progress=False)


def test_ensemble_config_errors_are_one_sentence():
    with pytest.raises(UserError, match="members must be >= 1"):
        load_config("tiny").replace(members=0)
    with pytest.raises(UserError, match="members must be >= 1, and 1 with pretrain"):
        load_config("tiny").replace(members=2, pretrain=0.3)


def test_a_conditional_ensemble_samples_one_class_like_a_per_class_run(cells, tmp_path):
    cfg = load_config("tiny").replace(conditional=True, members=2, name="tinycondx2")
    run = train_gan(cells, "all", config=cfg, out_root=tmp_path, steps=3, seed=1, progress=False)
    assert run.parent.name == "all" and find_runs(tmp_path) == {c: run for c in CLASSES}
    meta = json.loads((run / "config.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["data"]["n_train_images"] == 60
    g = load_generator(run, cls="monocyte")
    assert g.config["cls"] == "monocyte" and len(g.g.members) == 2
    assert torch.equal(generate(g, 5, seed=0), generate(load_generator(run, cls="monocyte"), 5, seed=0))


def test_audition_continues_the_best_candidates_and_resumes_bit_identically(cells, tmp_path, monkeypatch):
    """``audition = 3``: three candidates train 4 steps, the learnt proxy ranks them, the two best
    continue to 8 and make the generator; a kill in the second phase resumes to the same weights."""
    from wbcgen.gan.train import _rank

    cfg = TINY_ENS.replace(audition=3, audition_steps=4, eval_every=4, ckpt_every=4, select="learnt",
                           feat_steps=4, name="tinyau")
    full = train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    meta = json.loads((full / "config.json").read_text())
    au = meta["audition"]
    assert [s["step"] for s in au["scores"]] == [4, 4, 4] and all("class_acc" in s for s in au["scores"])
    ranked = sorted(range(3), key=lambda j: (_rank(au["scores"][j]), j))
    assert au["chosen"] == sorted(ranked[:2]) and au["continued"] == au["chosen"]
    assert meta["member_seeds"] == [5 + j for j in au["chosen"]]
    cand = [full / "members" / "gan" / "basophil" / f"m{j}" for j in range(3)]
    steps = [json.loads((m / "summary.json").read_text())["steps"] for m in cand]
    assert steps == [8 if j in au["chosen"] else 4 for j in range(3)]   # the dropped one stopped at the audition
    G = load_generator(full)
    for k, j in enumerate(au["chosen"]):
        assert torch.equal(G.members[k].fc.weight, load_generator(cand[j]).fc.weight)
    kill_during_step_7(monkeypatch, cells, "basophil", cfg, tmp_path / "b", seed=5)  # dies in the 2nd phase
    run = next((tmp_path / "b" / "gan" / "basophil").iterdir())
    assert json.loads((run / "config.json").read_text())["audition"]["continued"] == []
    resumed = train_gan(cells, "basophil", out_root=tmp_path / "b", resume=True, progress=False)
    assert resumed == run and json.loads((run / "config.json").read_text())["audition"] == au
    assert torch.equal(generate(load_generator(full), 8, seed=0), generate(load_generator(resumed), 8, seed=0))
    with pytest.raises(UserError, match="shorter than the config's audition"):
        train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "c", steps=3, progress=False)
    assert not (tmp_path / "c").exists()   # refused before any folder is made
    toml = tmp_path / "au.toml"
    toml.write_text('base = "tiny"\nname = "tinyau"\nmembers = 2\naudition = 3\naudition_steps = 4\n')
    res = CliRunner().invoke(main, ["train-gan", "--cls", "basophil", "--config", str(toml), "--steps", "3",
                                    "--data", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "d")])
    assert res.exit_code != 0 and "shorter than the config's audition" in res.output  # before reading any image
    assert "Traceback" not in res.output and not (tmp_path / "d").exists()
    with pytest.raises(UserError, match="audition must be 0"):
        TINY_ENS.replace(audition=2)
