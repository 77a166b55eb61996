"""torch.distributed glue for GAN training (DDP over GPUs, or gloo processes on a CPU).

Launch with ``torchrun --nproc_per_node N --no-python wbcgen train-gan --cls basophil`` (or any
launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT). The global batch is split
evenly over the ranks; only rank 0 writes files. Without those variables everything runs
in one process. Independent classes can also be spread over GPUs as separate jobs
(``CUDA_VISIBLE_DEVICES=1 wbcgen train-gan --cls eosinophil …``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from classifiers.runtime import pick_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: str | None = None) -> Dist:
    """Join (or create, from the torchrun environment) the default process group."""
    world = tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else int(
        os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=pick_device(device))
    owns = False
    dev = pick_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    rank = tdist.get_rank()
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
        torch.cuda.set_device(dev)
    return Dist(rank=rank, world=tdist.get_world_size(), device=dev, owns_group=owns)


def teardown(d: Dist) -> None:
    if d.owns_group and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.active:
        tdist.barrier()


def all_true(flag: bool, d: Dist) -> bool:
    """True only if ``flag`` holds on every rank."""
    if not d.active:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=d.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return bool(t.item())


def gather(t: torch.Tensor, d: Dist) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor (rank order), on the CPU."""
    if not d.active:
        return [t.cpu()]
    t = t.to(d.device)
    out = [torch.empty_like(t) for _ in range(d.world)]
    tdist.all_gather(out, t)
    return [o.cpu() for o in out]


def broadcast_text(text: str, d: Dist, max_len: int = 4096) -> str:
    """Rank 0's string on every rank (e.g. the run folder it chose)."""
    if not d.active:
        return text
    buf = torch.zeros(max_len, dtype=torch.uint8, device=d.device)
    if d.main:
        raw = text.encode("utf-8")[:max_len]
        buf[:len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    tdist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).rstrip(b"\0").decode("utf-8")
