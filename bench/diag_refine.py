"""A detail refiner learnt from real cells, applied to a synthetic set (issue 12, session 25).

Session 22 found that what the synthetic cells lack is per-cell realism, session 24 that they carry
150–2,000× too little fine detail (above a quarter of the 64-px sampling rate). Question: can a network that
learns, from REAL cells only, to put the fine detail back into a cell whose detail was removed, give the
generators' cells the granules and edges they lack — and does TSTR follow?

The refiner R is an image-to-image GAN (pix2pix, Isola et al. 2017) at the generators' 64-px size, trained on
the GANs' own training part (split seed 0; all five classes pooled: texture is shared knowledge; never a test
image): input = a 32-px crop of a real cell with its detail removed (2×2 area down to 32 px, bilinear back to 64), target =
the cell at 64 px; loss = hinge GAN on a conditional patch D (spectral norm) + ``--l1`` × L1. Output =
input + R's residual. At application a synthetic cell (128 px, G's 64 px + fixed bilinear upsample) is area-
averaged to 64 px, put through the same degradation (so R sees what it was trained on), refined, and
bilinearly upsampled back to 128 px like any fast64 cell.

Reported (one JSON line in bench/diag_refine.jsonl, runs under runs/diag-refine/NAME): the refiner's CPU
minutes and steps; check 1 (the bench's train-part W-Net) on the real TEST cells as they are, degraded and
refined (a sanity check of R) and on the synthetic set before / after; FD ÷ floor per class after; TSTR W-Net
(and WBCsNet with ``--wbcsnet``) over 3 classifier seeds on the refined set; a picture bench/grid_refine_NAME.png
(per class: 4 real test cells degraded → refined, then 4 synthetic cells before → after).

    python bench/diag_refine.py runs/bench-quality/fast64-layout-cpu60/synthetic --name layout60 --minutes 10
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm as SN

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from diag_swap import tstr  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402


def to64(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×128×128 -> float N×3×64×64 in [-1, 1] (2×2 area average)."""
    return F.avg_pool2d(images.float() / 127.5 - 1, images.shape[-1] // 64)


FACTOR = 2  # the degradation's area factor (2: detail above the 32-px sampling rate removed); --factor


def degrade(x: torch.Tensor) -> torch.Tensor:
    """Remove the detail above the (64 / FACTOR)-px sampling rate: FACTOR×FACTOR area average, bilinear back."""
    return F.interpolate(F.avg_pool2d(x, FACTOR), size=x.shape[-2:], mode="bilinear", align_corners=False)


def to_uint8_128(x: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    return ((up + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class Refiner(nn.Module):
    """A small fully convolutional U-Net (three scales, skips, no normalisation: it trains on crops and is
    applied to whole cells), residual output, initialised to the identity."""

    def __init__(self, w: int = 32):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.inc = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1), act)
        self.d1 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), act)
        self.d2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1), act)
        self.mid = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, 1, 1), act,
                                 nn.Conv2d(4 * w, 4 * w, 3, 1, 1), act)
        self.u1 = nn.Sequential(nn.Conv2d(4 * w + 2 * w, 2 * w, 3, 1, 1), act)
        self.u2 = nn.Sequential(nn.Conv2d(2 * w + w, w, 3, 1, 1), act)
        self.out = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        a = self.inc(x)
        b = self.d1(a)
        c = self.d2(b)
        c = c + self.mid(c)
        u = F.interpolate(c, scale_factor=2, mode="nearest")
        u = self.u1(torch.cat([u, b], 1))
        u = F.interpolate(u, scale_factor=2, mode="nearest")
        u = self.u2(torch.cat([u, a], 1))
        return (x + self.out(u)).clamp(-1, 1)


class PatchD(nn.Module):
    """Conditional patch discriminator: (degraded, image) -> 8×8 logits (receptive field ~30 px)."""

    def __init__(self, w: int = 32):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.net = nn.Sequential(SN(nn.Conv2d(6, w, 4, 2, 1)), act, SN(nn.Conv2d(w, 2 * w, 4, 2, 1)), act,
                                 SN(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), act, SN(nn.Conv2d(4 * w, 1, 3, 1, 1)))

    def forward(self, cond, x):
        return self.net(torch.cat([cond, x], 1))


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(x, k % 4, (-2, -1))
    return x.flip(-1) if k >= 4 else x


def train_refiner(real64: torch.Tensor, minutes: float, batch: int, crop: int, l1: float, seed: int,
                  log, max_steps: int | None = None) -> tuple[Refiner, dict]:
    """R and D trained for ``minutes`` of process CPU time (or ``max_steps``) on random crops of ``real64``
    under the 8 flips / turns; returns R in eval mode and {steps, cpu_minutes, params}."""
    torch.manual_seed(seed)
    R, D = Refiner(), PatchD()
    opt_r = torch.optim.Adam(R.parameters(), 2e-4, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.99))
    g = torch.Generator().manual_seed(seed)
    c0, step = time.process_time(), 0
    while time.process_time() - c0 < minutes * 60 and (max_steps is None or step < max_steps):
        idx = torch.randint(len(real64), (batch,), generator=g)
        full = d4(real64[idx], int(torch.randint(8, (1,), generator=g)))
        i, j = (int(v) for v in torch.randint(64 - crop + 1, (2,), generator=g))
        y, x = full[..., i:i + crop, j:j + crop], degrade(full)[..., i:i + crop, j:j + crop]
        fake = R(x)
        loss_d = F.relu(1 - D(x, y)).mean() + F.relu(1 + D(x, fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        adv, rec = -D(x, fake).mean(), (fake - y).abs().mean()
        loss_r = adv + l1 * rec
        opt_r.zero_grad(set_to_none=True)
        loss_r.backward()
        opt_r.step()
        step += 1
        if step % 100 == 0:
            log(f"step {step} cpu {(time.process_time() - c0) / 60:.1f} min  D {loss_d.item():.3f}  adv {adv.item():.3f}  "
                f"L1 {rec.item():.4f} (degraded {(x - y).abs().mean().item():.4f})")
    return R.eval(), {"steps": step, "cpu_minutes": round((time.process_time() - c0) / 60, 2),
                      "params": sum(p.numel() for p in R.parameters())}


@torch.no_grad()
def refine(R: Refiner, images: torch.Tensor) -> torch.Tensor:
    """uint8 128-px cells -> refined uint8 128-px cells (64-px area average, degrade, R, bilinear up)."""
    out = torch.empty_like(images)
    for i in range(0, len(images), 256):
        out[i:i + 256] = to_uint8_128(R(degrade(to64(images[i:i + 256]))))
    return out


def degraded(images: torch.Tensor) -> torch.Tensor:
    return torch.cat([to_uint8_128(degrade(to64(images[i:i + 256]))) for i in range(0, len(images), 256)])


def recall(pred, images, labels) -> dict:
    y = pred.predict(images)
    return {c: round(100 * float((y[labels == k] == k).float().mean()), 1) for k, c in enumerate(CLASSES)}


def grid(test, t_deg, t_ref, syn_images, syn_labels, s_ref, path: Path, k: int = 4) -> None:
    from torchvision.utils import save_image
    g = torch.Generator().manual_seed(0)
    rows = []
    for j in range(len(CLASSES)):
        it = torch.nonzero(test.labels == j).flatten()
        it = it[torch.randperm(len(it), generator=g)[:k]]
        js = torch.nonzero(syn_labels == j).flatten()
        js = js[torch.randperm(len(js), generator=g)[:k]]
        rows.append(torch.cat([test.images[it], t_deg[it], t_ref[it], syn_images[js], s_ref[js]]))
    x = torch.cat(rows).float() / 255
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x, path, nrow=5 * k, padding=2, pad_value=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("synthetic", help="a wbcgen sample folder (bench_quality's OUT/LABEL/synthetic)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--minutes", type=float, default=10, help="CPU minutes of refiner training")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=32, help="training crop (px of the 64-px cells)")
    ap.add_argument("--factor", type=int, default=2, help="degradation: 2 (detail above 32 px removed) or 4 (16 px)")
    ap.add_argument("--l1", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--tstr-epochs", type=int, default=5)
    ap.add_argument("--wbcsnet", action="store_true")
    ap.add_argument("--no-tstr", action="store_true", help="check 1 and FD only")
    ap.add_argument("--bench", default="runs/bench-quality")
    a = ap.parse_args()
    global FACTOR
    FACTOR = a.factor
    torch.set_num_threads(2)
    bench, out = Path(a.bench), ROOT / "runs" / "diag-refine" / a.name
    out.mkdir(parents=True, exist_ok=True)
    cells = load_cells(bq.DATA, progress=False)
    split = bq.the_split(cells, bench)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    syn = load_cells(a.synthetic, progress=False)
    res = {"synthetic": a.synthetic, "name": a.name, "date": time.strftime("%Y-%m-%d %H:%M"), "load_start": bq.load(),
           "commit": bq.commit(), "l1": a.l1, "batch": a.batch, "crop": a.crop, "factor": a.factor, "seed": a.seed}
    R, res["refiner"] = train_refiner(to64(train.images), a.minutes, a.batch, a.crop, a.l1, a.seed,
                                      lambda s: print(f"[{a.name}] {s}", flush=True))
    torch.save(R.state_dict(), out / "refiner.pt")
    pred, _ = bq.real_wnet(train, test, bench / "real-wnet-e8", 8, 0)
    t_deg, t_ref, s_ref = degraded(test.images), refine(R, test.images), refine(R, syn.images)
    res["check1_test"] = {"as_is": recall(pred, test.images, test.labels), "degraded": recall(pred, t_deg, test.labels),
                          "refined": recall(pred, t_ref, test.labels)}
    res["check1_syn"] = {"before": recall(pred, syn.images, syn.labels), "after": recall(pred, s_ref, syn.labels)}
    print(f"[{a.name}] check 1 test {res['check1_test']}\n[{a.name}] check 1 synthetic {res['check1_syn']}", flush=True)
    grid(test, t_deg, t_ref, syn.images, syn.labels, s_ref, ROOT / "bench" / f"grid_refine_{a.name}.png")
    refined = SimpleNamespace(images=s_ref, labels=syn.labels)
    res["fd_ratio"] = {c: v["fd_ratio"] for c, v in bq.distances(pred, test, refined, 0).items()}
    print(f"[{a.name}] FD ratio after {res['fd_ratio']}", flush=True)
    if not a.no_tstr:
        res |= tstr(s_ref, syn.labels, test, out, a.tstr_seeds, a.tstr_epochs, a.wbcsnet, a.name)
    res["load_end"] = bq.load()
    with open(ROOT / "bench" / "diag_refine.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
