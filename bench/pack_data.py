"""Pack pbc-dev small enough to travel to another machine (the GPU rows of bench/RESULTS.md).

The benchmark reads every cell at 128 px (wbcgen.data.load_cells), so this writes each image as
the loader sees it (crop auto, 128 px) as a JPEG (4:4:4, quality Q), and re-keys the benchmark's
split file to the new files' sha256 — the same images stay in the same part (train / test), so a
row taken from the pack uses the benchmark's split. The pixels differ from the originals by the
JPEG round trip (quality 90: mean |error| ~2 of 255); the sizes, classes and split do not.

    python bench/pack_data.py ../shared/data/pbc-dev .gpu/pbc128 --split runs/bench-quality/split.json
    # -> .gpu/pbc128/<class>/<name>.jpg and .gpu/pbc128-split.json (about 25 MB)
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wbcgen.data import load_cells  # noqa: E402
from wbcgen.data.splits import images_hash, load_split, save_split  # noqa: E402


def pack(src: str, dst: Path, split_path: Path, quality: int = 90) -> dict:
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst} is not empty: pack into a new folder")
    cells = load_cells(src, progress=False)
    old = load_split(split_path)
    new_images, manifest = {}, []
    for img, m in zip(cells.images, cells.manifest):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality, subsampling=0)
        data = buf.getvalue()
        path = dst / m["label"] / (Path(m["path"]).stem + ".jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        new_images[sha] = old["images"][m["sha256"]]  # the same part as the original image
        manifest.append({"sha256": sha, "label": m["label"]})
    split = copy.deepcopy(old)
    split["images"] = new_images
    split["data"] |= {"name": f"{old['data']['name']}-jpeg{quality}-128px", "images_sha256": images_hash(manifest),
                      "n_unique": len(new_images)}
    split.setdefault("notes", []).append(f"re-keyed from {split_path.name}: the images of {src} at 128 px as "
                                         f"JPEG quality {quality} (bench/pack_data.py)")
    out = dst.with_name(dst.name + "-split.json")
    save_split(out, split)
    size = sum(p.stat().st_size for p in dst.rglob("*.jpg"))
    return {"images": len(cells), "unique": len(new_images), "bytes": size, "split": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--split", required=True, help="the benchmark's split file (runs/bench-quality/split.json)")
    ap.add_argument("--quality", type=int, default=90)
    a = ap.parse_args()
    print(json.dumps(pack(a.src, Path(a.dst), Path(a.split), a.quality)))


if __name__ == "__main__":
    main()
