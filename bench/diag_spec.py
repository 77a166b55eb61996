"""How much fine detail do synthetic cells have? (issue 12, session 24: spectral matching.)

For every class: the spectral distance (wbcgen/gan/spectrum.py, the `spec_weight` loss) of the synthetic
cells to the class's training cells (the GANs' train part of bench_quality's split seed 0), in batches of 64
and averaged, against the same for the REAL test cells through a 64-px generator's own path (2×2 area
average, bilinear back to 128: the floor a perfect 64-px generator would reach). Also the luminance
power deficit above a quarter of the sampling rate (rings 16-32 at 64 px), in nats of log power against
the training cells: 0 = real cells' detail, -4.6 = 100× too little.

    python bench/diag_spec.py runs/bench-quality/LABEL/synthetic [--name LABEL]   # -> bench/diag_spec.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from diag_ceiling import through_64  # noqa: E402  (a real cell through a 64-px generator's output path)
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan.spectrum import power_map, real_log_power, ring_profile, spectral_loss  # noqa: E402


def measure(images: torch.Tensor, target: torch.Tensor, batch: int = 64) -> dict:
    """Mean spectral distance over whole batches of ``batch`` cells, and the high-frequency deficit."""
    x = images.float() / 127.5 - 1
    n = max(1, len(x) // batch)
    dist = sum(float(spectral_loss(x[i * batch:(i + 1) * batch], target, 64)) for i in range(n)) / n
    deficit = (ring_profile(torch.log(power_map(x, 64) + 1e-8)) - ring_profile(target))[0, 16:].mean()
    return {"dist": round(dist, 4), "hf_deficit_nats": round(float(deficit), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("synthetic", type=Path, help="a synthetic folder (wbcgen sample output)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--split", type=Path, default=ROOT / "runs" / "bench-quality" / "split.json")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pbc-dev")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "diag_spec.jsonl")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cells = load_cells(a.data, progress=False)
    train, test = (apply_split(cells, a.split, part) for part in ("train", "test"))
    syn = load_cells(a.synthetic, progress=False)
    rec = {"name": a.name or a.synthetic.parent.name, "synthetic": str(a.synthetic), "classes": {},
           "date": time.strftime("%Y-%m-%d %H:%M")}
    for c in CLASSES:
        target = real_log_power(train.of_class(c).images, 64, 128)
        te = test.of_class(c).images
        s = syn.of_class(c).images[:max(len(te), 64)]  # matched sizes (at least one batch)
        floor, got = measure(through_64(te), target), measure(s, target)
        rec["classes"][c] = {"test_via64": floor, "synthetic": got, "n_test": len(te), "n_syn": len(s),
                             "ratio": round(got["dist"] / floor["dist"], 1)}
        print(c, rec["classes"][c], flush=True)
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
