"""Fine-tune from an adapted start (issue 14, session 18): does test-time adaptation help few-shot?

Fits ``classify --adapt``'s per-channel corrections of a finished ``bench_robust.py --budget full`` row's
source W-Net on ALL of zheng2018 as one lab (unlabelled; after the row's per-lab stain map, as the row's
few-shot images are), folds them into the weights (each conv block's affine map into the next conv layer /
the fc layer; exact except at the next conv's zero-padded border), and writes the folded model as the
source of row ``ROW-fold`` — then ``bench_robust.py --row ROW --tag fold --reuse-source --fs-targets
zheng2018`` fine-tunes from it.

    python bench/diag_fold.py mkl-lab-scale
    python bench/bench_robust.py --row mkl-lab-scale --budget full --tag fold --reuse-source --fs-targets zheng2018 --ks 20
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_robust as br  # noqa: E402
from classifiers import adapt  # noqa: E402
from classifiers.predict import Predictor, load_model  # noqa: E402
from classifiers.runtime import save_safetensors_atomic  # noqa: E402
from wbcgen.data import load_cells  # noqa: E402


def fold(model, fixes) -> None:
    """W-Net: block i's output map a*h+b folded into the layer that reads it (conv of block i+1, or fc)."""
    readers = [model.conv[4], model.conv[8], model.fc]
    with torch.no_grad():
        for (a, b), nxt in zip(fixes, readers):
            w = nxt.weight
            if w.dim() == 4:      # conv: per input channel
                nxt.bias += (w.sum((2, 3)) * b.view(1, -1)).sum(1)
                w *= a.view(1, -1, 1, 1)
            else:                 # fc on the flattened C x 16 x 16 map: channel c owns a block of 256 inputs
                per = w.shape[1] // len(a)
                nxt.bias += (w.view(w.shape[0], len(a), per).sum(2) * b.view(1, -1)).sum(1)
                w *= a.repeat_interleave(per).view(1, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row")
    ap.add_argument("--out-root", default="runs/bench-robust/full")
    a = ap.parse_args()
    torch.set_num_threads(2)
    res = json.loads(br.result_path(a.row, "full").read_text())
    src, dst = Path(a.out_root) / a.row / "source", Path(a.out_root) / f"{a.row}-fold" / "source"
    z = load_cells(br.DATA / "zheng2018", label_map=br.ZHENG_MAP, crop=res["crop"], size=128,
                   cache_dir=ROOT / "runs" / "bench-robust" / "cache", progress=False)
    model, cfg = load_model(src)
    images = br.normalise(cfg.get("stain_norm"), z)          # what the row's few-shot runs train and test on
    plain = Predictor(model, {**cfg, "stain_norm": None}, device="cpu", tta=False)
    adapted = Predictor(model, {**cfg, "stain_norm": None}, device="cpu", tta=False, adapt_stats=True)
    want = adapted.logits(images)
    before = plain.logits(images)
    fixes = adapt.fit(model, cfg["activation_stats"], adapted._batches(images, None), len(images))
    fold(model, fixes)
    got = Predictor(model, {**cfg, "stain_norm": None}, device="cpu", tta=False).logits(images)
    agree = float((got.argmax(1) == want.argmax(1)).float().mean())
    print(f"folded vs adapted: {agree:.3f} of predictions agree (unadapted vs adapted: "
          f"{float((before.argmax(1) == want.argmax(1)).float().mean()):.3f}); accuracy folded "
          f"{float((got.argmax(1) == z.labels).float().mean()):.3f}, adapted {float((want.argmax(1) == z.labels).float().mean()):.3f}")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in ("config.json", "results.json"):
        shutil.copy(src / f, dst / f)
    save_safetensors_atomic(model.state_dict(), dst / "model.safetensors")
    print("folded source:", dst)


if __name__ == "__main__":
    main()
