"""Deterministic data order for the GAN trainer: a pure function of (seed, position), saved in
checkpoints, so a resumed run draws exactly the images the uninterrupted run would have; and
:func:`row_hashes`, the seeds keyed by a latent (noise maps, ensemble member, layout) that make
sampling independent of the batch a latent comes in."""
from __future__ import annotations

import hashlib

import torch

from classifiers.runtime import UserError


def row_hashes(z: torch.Tensor, salt: bytes = b"") -> list[int]:
    """A 64-bit blake2b hash of each row's float32 bytes (``z``: one row per sample, flattened;
    ``salt`` separates the uses)."""
    rows = z.detach().float().cpu().reshape(len(z), -1).contiguous().numpy()
    return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8, salt=salt).digest(), "little") for r in rows]


class DataOrder:
    """An endless stream of per-epoch permutations; epoch ``e`` is ``randperm(n)`` seeded by
    ``(seed, e)``, so the order is a pure function of the position (saved in checkpoints)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self.perm = self._perm(0)

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            take = min(k, self.n - self.pos)
            out.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            k -= take
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self.perm = self._perm(self.epoch)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "perm": self.perm.clone()}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])
        self.perm = self._perm(self.epoch)
        if not torch.equal(self.perm, s["perm"]):
            raise UserError("the checkpoint's data order does not match this data set; resume with the same data")

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.pos / self.n


class BalancedOrder:
    """Class-balanced stream for a conditional GAN: the class sequence is an endless stream
    of permutations of the class indices, and each class draws its next image from its own
    :class:`DataOrder` — every class is seen equally often, whatever its image count.

    ``group`` > 1: each class in the sequence yields ``group`` consecutive images, so a batch
    is made of same-class runs. The discriminator's minibatch-stddev groups (4 consecutive
    samples; the fakes get the real batch's classes) then measure the variety *within* a
    class; with interleaved classes they see the variety between classes, and a generator
    that draws one cell per class goes unpunished."""

    def __init__(self, labels: torch.Tensor, n_classes: int, seed: int, group: int = 1):
        self.index = [torch.nonzero(labels == k).flatten() for k in range(n_classes)]
        if any(len(i) == 0 for i in self.index):
            raise UserError("every class of a conditional GAN needs at least one image")
        self.n, self.group = len(labels), int(group)
        self.cls = DataOrder(n_classes, seed)
        self.per = [DataOrder(len(i), seed * 1009 + 17 * (k + 1)) for k, i in enumerate(self.index)]

    def next(self, k: int) -> torch.Tensor:
        if self.group == 1:
            return torch.stack([self.index[y][self.per[y].next(1)[0]] for y in self.cls.next(k).tolist()])
        runs = [self.index[y][self.per[y].next(self.group)] for y in self.cls.next(-(-k // self.group)).tolist()]
        return torch.cat(runs)[:k]

    def state_dict(self) -> dict:
        return {"cls": self.cls.state_dict(), "per": {str(k): o.state_dict() for k, o in enumerate(self.per)}}

    def load_state_dict(self, s: dict) -> None:
        if "cls" not in s or len(s["per"]) != len(self.per):
            raise UserError("the checkpoint's data order does not match this data set; resume with the same data")
        self.cls.load_state_dict(s["cls"])
        for k, o in enumerate(self.per):
            o.load_state_dict(s["per"][str(k)])

    @property
    def epochs_done(self) -> float:
        return sum(o.epochs_done * len(i) for o, i in zip(self.per, self.index)) / self.n
