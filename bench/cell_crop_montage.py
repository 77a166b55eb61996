"""Montage of ``--crop cell`` on each dataset: for every dataset a row of originals
(resized whole) above the same images' cell crops. Writes bench/cell_crop_montage.png.

    python bench/cell_crop_montage.py
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wbcgen.data import decode as dec

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WBCGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))
SETS = (("pbc-dev", "*/*.jpg"), ("zheng2018", "Dataset 1/*.bmp"), ("zheng2018", "Dataset 2/*.bmp"),
        ("bccd-aug", "images/TEST_SIMPLE/*/*.jpeg"))
N, TILE = 10, 72


def main() -> None:
    rows = []
    for name, pattern in SETS:
        files = sorted((DATA / name).glob(pattern))
        files = [files[round(i * (len(files) - 1) / (N - 1))] for i in range(N)]
        for crop in ("none", "cell"):
            tiles = [dec.decode(f.read_bytes(), dec.parse_crop(crop), TILE)[0] for f in files]
            rows.append(np.concatenate(tiles, 1))
    im = Image.fromarray(np.concatenate(rows, 0)).quantize(256, method=Image.Quantize.MEDIANCUT)
    im.save(ROOT / "bench" / "cell_crop_montage.png", optimize=True)


if __name__ == "__main__":
    main()
