"""Is 64 px enough? The check-1 judge (bench_quality's train-part W-Net, cached) on the REAL test
images as they are and after an area-downsample to S px and a bilinear upsample back to 128 px —
what a perfect generator with S-px learnt layers (``train_size = S``) could at best draw.

    python bench/diag_res.py            # sizes 64 and 32; prints per-class recall (check 1 on real cells)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def round_trip(x: torch.Tensor, size: int) -> torch.Tensor:
    f = F.interpolate(x.float(), size=(size, size), mode="area")
    return F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    from bench_quality import DATA, real_wnet, the_split
    from wbcgen.data import load_cells
    from wbcgen.data.splits import apply_split

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    out = ROOT / "runs" / "bench-quality"
    cells = load_cells(DATA, progress=False)
    split = the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    pred, info = real_wnet(train, test, out / "real-wnet-e8", 8, 0)
    for size in (128, 64, 32):
        x = test.images if size == 128 else round_trip(test.images, size)
        y = pred.predict(x)
        rec = {c: round(100 * float((y[test.labels == k] == k).float().mean()), 1) for k, c in enumerate(test.classes)}
        print(f"{size:>3} px round trip: per-class recall {rec}, balanced {sum(rec.values()) / len(rec):.1f}", flush=True)


if __name__ == "__main__":
    main()
