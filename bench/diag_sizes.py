"""How large are the cells? Median detected cell box side per class (``wbcgen.data.cellcrop.cell_geometry``).

    python bench/diag_sizes.py --crop none --every 1 ../shared/data/zheng2018 ../shared/data/bccd-aug/images/TEST
    python bench/diag_sizes.py --every 3 ../shared/data/pbc-dev runs/bench-quality/LABEL/synthetic

Each folder is loaded like any data set (``--crop``, 128 px unless ``--crop none``, which keeps the originals'
pixels); sets with source folders (zheng2018's Dataset 1 / 2) are reported per source. Issue 14 used the
original-pixel sizes to choose the ``--crop lab`` ruler; issue 12 the 128-px sizes of real vs synthetic cells.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wbcgen.data import load_cells  # noqa: E402
from wbcgen.data.cellcrop import NoCell, cell_geometry  # noqa: E402
from wbcgen.data.layouts import lab_groups  # noqa: E402

ZHENG_MAP = {"1": "neutrophil", "2": "lymphocyte", "3": "monocyte", "4": "eosinophil", "5": "basophil"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--crop", default="auto")
    ap.add_argument("--every", type=int, default=1, help="measure every N-th image")
    a = ap.parse_args()
    for folder in a.folders:
        size = None if a.crop == "none" else 128   # none: the labels from the loader, the pixels from the files
        kw = {"label_map": ZHENG_MAP} if "zheng" in folder else {}
        cells = load_cells(folder, crop=a.crop, size=size or 16, progress=False, **kw)
        groups = lab_groups([m["path"] for m in cells.manifest], cells.labels.tolist())
        for lab, idx in groups.items():
            sides: dict[str, list[float]] = {}
            for i in idx[::a.every]:
                img = cells.images[i] if size else None
                arr = (img.permute(1, 2, 0).numpy() if img is not None
                       else np.asarray(_original(folder, cells.manifest[i]["path"])))
                try:
                    sides.setdefault(cells.classes[cells.labels[i]], []).append(cell_geometry(arr)[2])
                except NoCell:
                    continue
            row = " ".join(f"{c[:1].upper()} {np.median(v):.0f} (n {len(v)})" for c, v in sorted(sides.items()))
            allv = [s for v in sides.values() for s in v]
            print(f"{folder}{' / ' + lab if lab else ''}: {row}; lab median {np.median(allv):.0f}", flush=True)


def _original(folder: str, rel: str):
    from PIL import Image

    return Image.open(Path(folder) / rel).convert("RGB")


if __name__ == "__main__":
    main()
