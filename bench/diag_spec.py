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

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from diag_ceiling import through_64  # noqa: E402  (a real cell through a 64-px generator's output path)
from diag_copy import run_diagnostic  # noqa: E402  (the command line shared with diag_copy.py)
from wbcgen.gan.spectrum import power_map, real_log_power, ring_profile, spectral_loss  # noqa: E402


def measure(images: torch.Tensor, target: torch.Tensor, batch: int = 64) -> dict:
    """Mean spectral distance over whole batches of ``batch`` cells, and the high-frequency deficit."""
    x = images.float() / 127.5 - 1
    n = max(1, len(x) // batch)
    dist = sum(float(spectral_loss(x[i * batch:(i + 1) * batch], target, 64)) for i in range(n)) / n
    deficit = (ring_profile(torch.log(power_map(x, 64) + 1e-8)) - ring_profile(target))[0, 16:].mean()
    return {"dist": round(dist, 4), "hf_deficit_nats": round(float(deficit), 2)}


def per_class(c: str, tr: torch.Tensor, te: torch.Tensor, syn: torch.Tensor) -> dict:
    """Class ``c``'s record from its training, test and synthetic cells (uint8)."""
    target = real_log_power(tr, 64, 128)
    s = syn[:max(len(te), 64)]  # matched sizes (at least one batch)
    floor, got = measure(through_64(te), target), measure(s, target)
    return {"test_via64": floor, "synthetic": got, "n_test": len(te), "n_syn": len(s),
            "ratio": round(got["dist"] / floor["dist"], 1)}


if __name__ == "__main__":
    run_diagnostic(__doc__, "diag_spec.jsonl", per_class)
