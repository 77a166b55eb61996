"""bench/row_from_members.py: curve members (one run per seed) copied into a row are the ensemble a fresh
``train-gan`` of the config trains (every weight equal), one member stands as itself, and a member of another
length or config is refused. Real pbc-dev basophils, tiny widths, step-bounded (so equality is exact)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from wbcgen.gan import load_config, train_gan

from evalkit import bench_module

rfm = bench_module("row_from_members")
TWO = load_config("tiny").replace(members=2, name="tinyens")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _weights(run):
    return load_file(str(run / "generator" / "model.safetensors"))


def _member(cells, out, seed, steps=4, cfg=TWO):
    one = cfg.replace(members=1, audition=0, name=f"{cfg.name}-member")  # what bench_curve.py trains
    assert rfm.member_config(cfg).to_dict() == one.to_dict()
    return train_gan(cells, "basophil", config=one, out_root=out / "curve-runs", run_name=f"curve-{one.name}-s{seed}",
                     steps=steps, seed=seed, progress=False)


def test_members_assemble_into_the_fresh_ensemble_and_refusals(cells, tmp_path):
    out = tmp_path / "bq"
    m3, m4 = _member(cells, out, 3), _member(cells, out, 4)
    assert [rfm.member_run(out, TWO, "basophil", s, 4) for s in (3, 4)] == [m3, m4]
    fresh = train_gan(cells, "basophil", config=TWO, out_root=tmp_path / "fresh", steps=4, seed=3, progress=False)

    runs = rfm.build_row({"basophil": [m3, m4]}, TWO, out / "row", gan_seed=3, steps=4, train=cells)
    got, want = _weights(runs["basophil"]), _weights(fresh)
    assert sorted(got) == sorted(want) and {k.split(".")[1] for k in got} == {"0", "1"}
    assert all(torch.equal(got[k], want[k]) for k in want)
    meta = json.loads((runs["basophil"] / "config.json").read_text())
    assert meta["ensemble"] and meta["member_seeds"] == [3, 4] and meta["gan"]["members"] == 2
    assert rfm._steps(runs["basophil"]) == [4, 4]
    assert (m3 / "generator" / "model.safetensors").is_file()  # the members are copied, not moved

    one = rfm.build_row({"basophil": [m3]}, TWO, out / "row1", gan_seed=3, steps=4)["basophil"]
    w1, w3 = _weights(one), _weights(m3)
    assert one.name == m3.name and sorted(w1) == sorted(w3) and all(torch.equal(w1[k], w3[k]) for k in w3)

    with pytest.raises(SystemExit, match="has 4 steps, not 6"):
        rfm.member_run(out, TWO, "basophil", 3, 6)
    with pytest.raises(SystemExit, match="missing or unfinished"):
        rfm.member_run(out, TWO, "basophil", 5, 4)
    other = TWO.replace(lr_g=TWO.lr_g * 2)  # same name, another member config
    with pytest.raises(SystemExit, match="another config .*lr_g"):
        rfm.member_run(out, other, "basophil", 3, 4)


def test_ledger_cpu_keeps_the_last_line_per_key(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    line = {"config": "x-member", "class": "basophil", "seed": 0, "step": 450}
    a.write_text(json.dumps(line | {"cpu_min": 9.0}) + "\n" + json.dumps(line | {"step": 300, "cpu_min": 5.0}) + "\n")
    b.write_text(json.dumps(line | {"cpu_min": 26.3}) + "\n" + json.dumps({"run": "x", "check1": 0.5}) + "\n")  # + a diag line
    both, first = rfm.ledger_cpu([a, b]), rfm.ledger_cpu([a])
    assert both[("x-member", "basophil", 0, 450)] == 26.3
    assert first[("x-member", "basophil", 0, 300)] == 5.0
    assert both.get(("x-member", "basophil", 1, 450)) is None
