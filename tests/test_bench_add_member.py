"""bench/diag_add_member.py: a finished ensemble run, copied and resumed under a config with one more member,
is the larger ensemble a fresh run would have trained (its first members bit for bit), and the source run is
left as it was. Real pbc-dev basophils, tiny widths, step-bounded (so equality is exact)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from wbcgen.gan import load_config, train_gan
from wbcgen.gan.ensemble import train_ensemble

from evalkit import bench_module

dam = bench_module("diag_add_member")
TWO = load_config("tiny").replace(members=2, name="tinyens")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _weights(run):
    return load_file(str(run / "generator" / "model.safetensors"))


def test_adding_a_member_equals_a_fresh_three_member_run_and_keeps_the_source(cells, tmp_path):
    three = TWO.replace(members=3)
    src = train_gan(cells, "basophil", config=TWO, out_root=tmp_path / "two", steps=4, seed=3, progress=False)
    before = _weights(src)
    fresh = train_gan(cells, "basophil", config=three, out_root=tmp_path / "three", steps=4, seed=3, progress=False)

    dst = tmp_path / "added" / "gan" / "basophil" / src.name
    dam.copy_unassembled(src, dst, three)
    assert not (dst / "generator").exists() and not (dst / "summary.json").exists()
    meta = json.loads((dst / "config.json").read_text())
    assert meta["gan"]["members"] == 3 and meta["member_seeds"] == [3, 4, 5] and len(meta["members"]) == 3
    assert train_ensemble(cells, "basophil", resume=dst, progress=False) == dst

    got, want = _weights(dst), _weights(fresh)
    assert sorted(got) == sorted(want) and {k.split(".")[1] for k in got} == {"0", "1", "2"}
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(torch.equal(got[k], before[k]) for k in before)  # members 0 and 1: the source's, untouched
    assert [m["steps"] for m in json.loads((dst / "summary.json").read_text())["members"]] == [4, 4, 4]
    after = _weights(src)  # the source run still holds its two-member generator
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in before)
