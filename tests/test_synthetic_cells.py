"""wbcgen.data.SyntheticCells / MixedCells: synthetic cells in a DataLoader, item i equal to
the file `wbcgen sample` writes for index i (real generators saved with save_pretrained,
real `wbcgen sample` CLI, real pbc-dev cells for the mix)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import DataLoader

from classifiers.runtime import UserError
from wbcgen.cli import main
from wbcgen.data import CLASS_TO_IDX, CLASSES, BlockShuffleSampler, MixedCells, SyntheticCells, load_cells

N, BS, SEED = 7, 3, 11          # 7 per class with batch size 3: blocks 0-2, 3-5 and a padded 6


@pytest.fixture(scope="module")
def gens(tmp_path_factory):
    """A GAN repo layout (<class>/model.safetensors + config.json) of real tiny generators."""
    from wbcgen.gan import create_gan

    root = tmp_path_factory.mktemp("gens")
    for k, c in enumerate(("eosinophil", "monocyte")):
        torch.manual_seed(100 + k)
        create_gan("tiny")[0].save_pretrained(root / c)
    return root


@pytest.fixture(scope="module")
def sampled(gens, tmp_path_factory):
    out = tmp_path_factory.mktemp("sampled") / "s"
    r = CliRunner().invoke(main, ["sample", "--from", str(gens), "-n", str(N), "--seed", str(SEED),
                                  "--batch-size", str(BS), "--out", str(out), "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out


def png(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_item_i_is_the_file_sample_writes(gens, sampled):
    ds = SyntheticCells(str(gens), N, SEED, batch_size=BS)
    assert len(ds) == 2 * N and ds.classes == ("eosinophil", "monocyte")
    rows = list(csv.DictReader(open(sampled / "metadata.csv")))
    assert len(rows) == len(ds)
    for i in range(len(ds)):                         # metadata rows are class-major in CLASSES order too
        x, y = ds[i]
        cls, j = ds.locate(i)
        assert (rows[i]["label"], int(rows[i]["index"])) == (cls, j) and y == CLASS_TO_IDX[cls]
        assert x.dtype == torch.uint8 and x.shape == (3, 128, 128)
        assert torch.equal(x, png(sampled / rows[i]["file_name"])), rows[i]["file_name"]
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert len(ds._cache) <= ds.cache_blocks
    # deterministic per index, whatever the access order (a fresh dataset, reversed order)
    again = SyntheticCells(str(gens), N, SEED, batch_size=BS)
    assert all(torch.equal(again[i][0], ds[i][0]) for i in reversed(range(len(ds))))
    other = SyntheticCells(str(gens), N, SEED + 1, batch_size=BS)
    assert not torch.equal(other[0][0], ds[0][0])


def test_dataloader_workers_and_block_shuffle(gens, sampled):
    ds = SyntheticCells(str(gens), N, SEED, batch_size=BS)
    sampler = BlockShuffleSampler(ds, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(ds))) and order != list(range(len(ds)))
    blocks = [(i // N, (i % N) // BS) for i in order]
    assert len([b for k, b in enumerate(blocks) if k == 0 or b != blocks[k - 1]]) == 6   # each block once
    dl = DataLoader(ds, batch_size=4, sampler=BlockShuffleSampler(ds, seed=0), num_workers=2)
    seen = {}
    for xb, yb in dl:
        for x, y in zip(xb, yb):
            seen[len(seen)] = (x, int(y))
    order = list(BlockShuffleSampler(ds, seed=0))     # the same permutation again
    rows = list(csv.DictReader(open(sampled / "metadata.csv")))
    for k, i in enumerate(order):
        x, y = seen[k]
        assert y == CLASS_TO_IDX[rows[i]["label"]]
        assert torch.equal(x, png(sampled / rows[i]["file_name"]))


def test_mixed_cells(gens, pbc_small):
    real = load_cells(pbc_small, size=128, progress=False).subset(list(range(0, 60, 4)))   # 15 real cells
    syn = SyntheticCells(str(gens), N, SEED, batch_size=BS)
    mix = MixedCells(real, syn, ratio=0.25)
    assert len(mix) == 15 + 5                      # 5 / 20 = 25 % synthetic
    assert mix.synthetic_index == [0, 1, 2, N, N + 1]          # spread over the classes, block-friendly
    for i in range(15):
        x, y = mix[i]
        assert torch.equal(x, real.images[i]) and y == CLASS_TO_IDX[real.classes[int(real.labels[i])]]
    assert [mix[i][1] for i in range(15, 20)] == [CLASS_TO_IDX["eosinophil"]] * 3 + [CLASS_TO_IDX["monocyte"]] * 2
    assert torch.equal(mix[19][0], syn[N + 1][0]) and mix.is_synthetic(15) and not mix.is_synthetic(14)
    assert len(MixedCells(real, syn, 0)) == 15
    with pytest.raises(UserError, match="raise n_per_class"):
        MixedCells(real, syn, 0.9)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        MixedCells(real, syn, 1.0)
    with pytest.raises(UserError, match="unknown class 'blast'"):
        SyntheticCells({"blast": gens / "monocyte"}, 2)


def test_class_to_idx_is_wbcgen_order():
    assert CLASS_TO_IDX == {c: i for i, c in enumerate(CLASSES)} and CLASS_TO_IDX["neutrophil"] == 0
    assert list(CLASS_TO_IDX) == ["neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte"]
