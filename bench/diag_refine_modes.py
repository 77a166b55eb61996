"""The three refiner modes side by side on a proxy with a known answer (issue 12, session 28).

Question: which ``refine_mode`` (wbcgen/gan/refiner.py) draws real-looking detail onto a smooth cell without
the paired refiner's contour rings and monocyte mesh? A GAN's cells are not needed to look at that: a class's
training-part cells (split seed 0, ``runs/bench-quality/split.json``; never a test cell) are halved; half A is
what R learns real cells from, half B is Gaussian-blurred (sigma ``--sigma`` px at 128 px) as a stand-in for a
generator's smooth cells — and its sharp originals are the answer. Per mode, R trains ``--steps`` steps with
the product's ``train_refiner`` (paired and stochastic on degraded half A, blur 2 as
bench/configs/fast64x2-refine-stoch.toml; unpaired on half A vs blurred half B) and is applied as the product
applies it (DetailStage). Reported per class and mode (one JSON line each in bench/diag_refine_modes.jsonl):
fine-detail power (image minus its 3×3 mean, at 64 px) of the refined cells against the blurred input and the
sharp originals, and their L1 to the originals; a picture bench/grid_refine_modes_CLASS.png (rows: originals,
blurred, paired, stochastic, unpaired; 4 cells).

    python bench/diag_refine_modes.py --classes basophil monocyte --steps 700
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan.refiner import MODES, DetailStage, to64, train_refiner  # noqa: E402


def detail(x: torch.Tensor) -> float:
    """Fine-detail power of uint8 cells at the refiner's 64 px (image minus its 3×3 local mean)."""
    t = to64(x)
    return round((t - F.avg_pool2d(t, 3, 1, 1)).pow(2).mean().item(), 5)


@torch.no_grad()
def apply(R, mode: str, factor: int, images: torch.Tensor) -> torch.Tensor:
    st = DetailStage(factor, mode)
    st.net.load_state_dict(R.state_dict())
    st.trained.fill_(1)
    return st.eval()(images.float() / 255).mul(255).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pbc-dev"))
    ap.add_argument("--split", default=str(ROOT / "runs" / "bench-quality" / "split.json"))
    ap.add_argument("--classes", nargs="+", default=["basophil", "monocyte"], choices=CLASSES)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--steps", type=int, default=700, help="refiner steps (the rows give R ~650 per class)")
    ap.add_argument("--sigma", type=float, default=1.6, help="the stand-in's Gaussian blur (px at 128 px)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cells = load_cells(a.data, progress=False)
    if not Path(a.split).is_file():
        raise SystemExit(f"no split at {a.split}: run a bench_quality row first (it writes the split)")
    train = apply_split(cells, a.split, "train")
    out = Path(a.out)
    for cls in a.classes:
        imgs = train.images[train.labels == CLASSES.index(cls)]
        perm = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(0))
        half_a, half_b = imgs[perm[:len(imgs) // 2]], imgs[perm[len(imgs) // 2:]]
        soft = TF.gaussian_blur(half_b.float(), 2 * round(3 * a.sigma) + 1, a.sigma).round().to(torch.uint8)
        rows = [half_b[:4], soft[:4]]
        for mode in a.modes:
            c0 = time.process_time()
            R, info = train_refiner(half_a, steps=a.steps, factor=4, seed=0, mode=mode,
                                    blur=0.0 if mode == "unpaired" else 2.0,
                                    fakes=soft if mode == "unpaired" else None)
            ref = apply(R, mode, 4, soft)
            line = {"class": cls, "mode": mode, "steps": info["steps"], "cpu_s": round(time.process_time() - c0),
                    "n_a": len(half_a), "n_b": len(half_b), "sigma": a.sigma,
                    "detail": {"originals": detail(half_b), "blurred": detail(soft), "refined": detail(ref)},
                    "l1_to_originals": {"blurred": round((soft.float() - half_b.float()).abs().mean().item() / 255, 4),
                                        "refined": round((ref.float() - half_b.float()).abs().mean().item() / 255, 4)},
                    "date": time.strftime("%Y-%m-%d %H:%M"), "load": bq.load(), "commit": bq.commit()}
            print(json.dumps(line), flush=True)
            with open(out / "diag_refine_modes.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
            rows.append(ref[:4])
        from torchvision.utils import save_image
        save_image(torch.cat(rows).float() / 255, out / f"grid_refine_modes_{cls}.png", nrow=4, padding=2, pad_value=1.0)


if __name__ == "__main__":
    main()
