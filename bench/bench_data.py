"""Data-layer throughput: decoding + crop + resize of pbc-dev, cold and from the tensor cache.

    python bench/bench_data.py [--data ../shared/data/pbc-dev]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from wbcgen.data import load_cells


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/pbc-dev")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        cells = load_cells(a.data, cache_dir=cache, workers=a.workers, progress=False)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        again = load_cells(a.data, cache_dir=cache, workers=a.workers, progress=False)
        warm = time.perf_counter() - t
    assert len(again) == len(cells)
    mb = cells.images.numel() / 1e6
    print(f"{len(cells)} images → {tuple(cells.images.shape)} uint8 ({mb:.0f} MB in memory)")
    print(f"cold (decode+crop+resize, {a.workers} threads): {cold:.2f} s = {len(cells) / cold:.0f} img/s")
    print(f"warm (manifest hash + tensor cache):    {warm:.2f} s = {len(cells) / warm:.0f} img/s")


if __name__ == "__main__":
    main()
