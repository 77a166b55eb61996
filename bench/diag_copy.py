"""Are synthetic cells copies of training cells? (issue 12, session 23: layout generators keep a real cell's
structure, so this must be measured, not assumed.)

For every class: each cell's distance to its NEAREST training cell of the class (the GANs' train part of
bench_quality's split seed 0, under all eight flips / quarter turns), in pixels at 64 px (2×2 area average,
[0, 1], root-mean-square over pixels and channels). The floor is the same distance for the REAL test cells —
new real cells of the class, which no generator has seen. A synthetic set whose nearest-train distances sit
far below the test cells' copies its training cells; at or above them it draws new cells. Also reported:
the share of cells closer to a training cell than the closest 1 % of test cells are (near-copies), and a
SMOOTH floor — the test cells Gaussian-blurred (sigma 2 px at 128 px) — because a smooth image is closer in
pixels to every textured one than another textured image is: synthetic cells without granules sit below
the sharp floor without copying anything.

    python bench/diag_copy.py runs/bench-quality/LABEL/synthetic [--name LABEL]   # -> bench/diag_copy.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan.layout import d4  # noqa: E402


def small(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×128×128 -> float N×(3·64·64) in [0, 1] (what a 64-px D sees)."""
    return F.avg_pool2d(images.float() / 255, 2).flatten(1)


def blurred(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    x = gaussian_blur(images.float(), kernel_size=int(4 * sigma) | 1, sigma=sigma)
    return x.round().clamp(0, 255).to(torch.uint8)


def nearest(query: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance of each query cell to its nearest training cell under the eight flips / turns."""
    x = F.avg_pool2d(train.float() / 255, 2)
    # float64: cdist's matrix-product route loses ~1e-3 to cancellation in float32 (an exact copy was not at 0
    # on every CPU's BLAS)
    views = torch.cat([d4(x, torch.full((len(x),), t)) for t in range(8)]).flatten(1).double()
    q = small(query).double()
    best = torch.cat([torch.cdist(q[i:i + 256], views).min(1).values for i in range(0, len(q), 256)])
    return (best / q.shape[1] ** 0.5).float()


def per_class(c: str, tr: torch.Tensor, te: torch.Tensor, syn: torch.Tensor) -> dict:
    """Class ``c``'s record from its training, test and synthetic cells (uint8)."""
    floor, d = nearest(te, tr), nearest(syn, tr)
    smooth = nearest(blurred(te), tr)
    q01 = float(torch.quantile(floor, 0.01))
    return {"test_median": round(float(floor.median()), 4), "syn_median": round(float(d.median()), 4),
            "ratio": round(float(d.median() / floor.median()), 3),
            "test_smooth_median": round(float(smooth.median()), 4),
            "ratio_smooth": round(float(d.median() / smooth.median()), 3),
            "near_copies": round(float((d < q01).float().mean()), 4), "n_syn": len(d),
            "n_test": len(floor), "n_train": len(tr)}


def run_diagnostic(doc: str, out_name: str, measure) -> None:
    """The command line shared by the synthetic-folder diagnostics (this one, diag_spec.py): a synthetic
    folder against bench_quality's split of pbc-dev; ``measure(cls, train, test, synthetic)`` gives each
    class's record (printed); one JSON line per call appended to bench/<out_name>."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("synthetic", type=Path, help="a synthetic folder (wbcgen sample output)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--split", type=Path, default=ROOT / "runs" / "bench-quality" / "split.json")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pbc-dev")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / out_name)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cells = load_cells(a.data, progress=False)
    train, test = (apply_split(cells, a.split, part) for part in ("train", "test"))
    syn = load_cells(a.synthetic, progress=False)
    rec = {"name": a.name or a.synthetic.parent.name, "synthetic": str(a.synthetic), "classes": {},
           "date": time.strftime("%Y-%m-%d %H:%M")}
    for c in CLASSES:
        rec["classes"][c] = measure(c, train.of_class(c).images, test.of_class(c).images, syn.of_class(c).images)
        print(c, rec["classes"][c], flush=True)
    with a.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    run_diagnostic(__doc__, "diag_copy.jsonl", per_class)
