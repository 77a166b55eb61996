"""Synthetic cells straight into a training loop, without writing files.

:class:`SyntheticCells` is a map-style ``torch.utils.data.Dataset``: item ``i`` is class
``classes[i // n_per_class]``, index ``j = i % n_per_class``, and its image is exactly the
file ``wbcgen sample --seed S --batch-size B`` writes for that class and index (the same
latents, the same ``B``-sized generator batches). Generation is batched: the whole block of
``B`` indices holding ``j`` is generated at once and kept in a small per-process cache, so
sequential or :class:`BlockShuffleSampler` access costs one generator call per ``B`` items.
:class:`MixedCells` adds a share of synthetic cells to a real set.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Sampler

from classifiers.runtime import UserError

from .cellset import CLASS_TO_IDX, CLASSES, CellSet


class SyntheticCells(Dataset):
    """``(image uint8 3×128×128, label)`` pairs from per-class generators, deterministic per index.

    ``generators``: ``{class: Generator | run/generator folder}``, or a Hub repo id / GAN repo
    or run folder (anything ``wbcgen sample --from`` takes). Labels are wbcgen's
    :data:`CLASS_TO_IDX`. ``batch_size`` must equal ``wbcgen sample``'s ``--batch-size``
    (default 250) for the images to be bit-identical to its files. Each process keeps the last
    ``cache_blocks`` blocks (one block of 250 is 12 MB), so a shuffled :class:`MixedCells`
    whose synthetic part fits in the cache generates each block once per worker.
    """

    def __init__(self, generators: Any, n_per_class: int, seed: int = 0, *, batch_size: int = 250,
                 transform: Callable | None = None, cache_blocks: int = 16, device: str = "cpu"):
        from wbcgen.gan.sample import class_seed, load_generator

        if isinstance(generators, (str, Path)):
            from wbcgen.hub import resolve_generators

            generators = resolve_generators(generators)
        if not generators:
            raise UserError("SyntheticCells needs at least one generator")
        unknown = [c for c in generators if c not in CLASSES]
        if unknown:
            raise UserError(f"unknown class {unknown[0]!r}; choose from {', '.join(CLASSES)}")
        if int(n_per_class) < 1 or int(batch_size) < 1:
            raise UserError(f"n_per_class and batch_size must be positive (got {n_per_class}, {batch_size})")
        self.classes = tuple(c for c in CLASSES if c in generators)
        self.n_per_class, self.seed, self.batch_size = int(n_per_class), int(seed), int(batch_size)
        self.transform, self.cache_blocks, self.device = transform, max(1, int(cache_blocks)), device
        self.generators = {c: g if isinstance(g, torch.nn.Module) else load_generator(g, device)
                           for c, g in ((c, generators[c]) for c in self.classes)}
        self.class_seeds = {c: class_seed(self.seed, c) for c in self.classes}
        self._cache: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return self.n_per_class * len(self.classes)

    def locate(self, i: int) -> tuple[str, int]:
        """(class, per-class index) of item ``i`` — the file ``<class>/<class>_<index:06d>.png``."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} synthetic cells")
        return self.classes[i // self.n_per_class], i % self.n_per_class

    def label(self, i: int) -> int:
        return CLASS_TO_IDX[self.locate(i)[0]]

    def _block(self, cls: str, b: int) -> torch.Tensor:
        from wbcgen.gan.sample import generate

        key = (cls, b)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        start = b * self.batch_size
        n = min(self.batch_size, self.n_per_class - start)
        imgs = generate(self.generators[cls], n, seed=self.class_seeds[cls], batch_size=self.batch_size,
                        device=self.device, start=start).clone()
        self._cache[key] = imgs
        while len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return imgs

    def __getitem__(self, i: int):
        cls, j = self.locate(int(i))
        b = j // self.batch_size
        img = self._block(cls, b)[j - b * self.batch_size].clone()
        return (self.transform(img) if self.transform else img), CLASS_TO_IDX[cls]

    def __getstate__(self) -> dict:  # DataLoader workers start with an empty cache
        return {**self.__dict__, "_cache": OrderedDict()}


class BlockShuffleSampler(Sampler):
    """Shuffles :class:`SyntheticCells` block by block (block order, then order within each
    block), so an epoch generates every block once instead of once per item."""

    def __init__(self, data: SyntheticCells, seed: int = 0):
        self.data, self.g = data, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        d, bs = self.data, self.data.batch_size
        blocks = [(k, s) for k in range(len(d.classes)) for s in range(0, d.n_per_class, bs)]
        for bi in torch.randperm(len(blocks), generator=self.g).tolist():
            k, s = blocks[bi]
            n = min(bs, d.n_per_class - s)
            yield from (k * d.n_per_class + s + t for t in torch.randperm(n, generator=self.g).tolist())


class MixedCells(Dataset):
    """Real cells plus synthetic ones making up the share ``ratio`` (0 ≤ ratio < 1) of the mix:
    ``round(len(real) · ratio / (1 − ratio))`` synthetic items, spread evenly over the
    synthetic classes (the first indices of each, so generation stays block-wise).

    ``real`` is a :class:`CellSet` (labels are mapped to :data:`CLASS_TO_IDX` by class name) or
    any dataset of ``(image, wbcgen label)``; items ``0 … len(real)-1`` are the real ones.
    """

    def __init__(self, real: Any, synthetic: SyntheticCells, ratio: float, *, transform: Callable | None = None):
        if not 0 <= float(ratio) < 1:
            raise UserError(f"ratio is the synthetic share of the mix and must be in [0, 1) (got {ratio})")
        self.real, self.synthetic, self.ratio, self.transform = real, synthetic, float(ratio), transform
        n_syn = round(len(real) * self.ratio / (1 - self.ratio))
        k = len(synthetic.classes)
        per = [n_syn // k + (1 if c < n_syn % k else 0) for c in range(k)]
        if max(per, default=0) > synthetic.n_per_class:
            raise UserError(f"ratio {ratio} needs {max(per)} synthetic cells per class but the synthetic set has "
                            f"{synthetic.n_per_class}; raise n_per_class")
        self.synthetic_index = [c * synthetic.n_per_class + j for c in range(k) for j in range(per[c])]
        self._real_label = None
        if isinstance(real, CellSet):
            self._real_label = [CLASS_TO_IDX.get(c, -1) for c in real.classes]
            if -1 in self._real_label:
                raise UserError(f"real classes {', '.join(real.classes)} are not all wbcgen classes")

    def __len__(self) -> int:
        return len(self.real) + len(self.synthetic_index)

    def is_synthetic(self, i: int) -> bool:
        return i >= len(self.real)

    def __getitem__(self, i: int):
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} cells")
        if i < len(self.real):
            if self._real_label is not None:
                x, y = self.real.images[i], self._real_label[int(self.real.labels[i])]
            else:
                x, y = self.real[i]
        else:
            x, y = self.synthetic[self.synthetic_index[i - len(self.real)]]
        return (self.transform(x) if self.transform else x), y
