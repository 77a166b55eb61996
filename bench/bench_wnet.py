"""W-Net training and inference throughput: the trainer (a recipe) vs a plain loop.

The plain loop is what the paper describes: batch 5, fp32, Adam 1e-4, no augmentation,
contiguous tensors. The trainer runs the real ``classifiers.train.fit`` with a recipe
(default wnet-cpu: batch 64, bf16 autocast on CPUs with native bf16, batched augmentation,
class-balanced sampling) and reports its own measured images/s (training steps only,
validation excluded). Inference compares ``Predictor`` (batch 128, with and without 8-view
TTA) to a batch-5 fp32 loop. ``*_cpu_share`` is the process's CPU time / wall time (2.0 =
both cores to itself): on a shared machine it says how much of the CPU a number got.

    python bench/bench_wnet.py                                  # embedded sample, ~2 minutes
    python bench/bench_wnet.py --data ../shared/data/pbc-dev --n 1024 --out bench/wnet.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch
import torch.nn.functional as F

import classifiers
from classifiers import train
from classifiers.predict import Predictor
from classifiers.recipes import apply_overrides, load_recipe


def plain_train(images, labels, seconds: float, batch: int = 5) -> float:
    torch.manual_seed(0)
    model = classifiers.create_model("wnet").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n, seen, i = len(images), 0, 0
    step = lambda x, y: (opt.zero_grad(), F.cross_entropy(model(x), y).backward(), opt.step())  # noqa: E731
    step(images[:batch].float() / 255, labels[:batch])  # warm-up
    t0 = time.time()
    while time.time() - t0 < seconds:
        idx = torch.arange(i, i + batch) % n
        step(images[idx].float() / 255, labels[idx])
        seen, i = seen + batch, i + batch
    return seen / (time.time() - t0)


@torch.inference_mode()
def plain_infer(model, images, batch: int = 5) -> float:
    model.eval()
    t0 = time.time()
    for i in range(0, len(images), batch):
        model(images[i:i + batch].float() / 255)
    return len(images) / (time.time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="image folder (default: the embedded PBC sample)")
    ap.add_argument("--n", type=int, default=512, help="images used (repeated when the folder is smaller)")
    ap.add_argument("--recipe", default="wnet-cpu")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--plain-seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from wbcgen.data import load_cells

    cells = load_cells(args.data, progress=False)
    reps = -(-args.n // len(cells))
    images = cells.images.repeat(reps, 1, 1, 1)[:args.n]
    labels = cells.labels.repeat(reps)[:args.n]
    load = os.getloadavg()
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "loadavg_before": load, "torch": torch.__version__}, "n_images": len(images)}

    c0, w0 = time.process_time(), time.time()
    res["plain_train_ips"] = plain_train(images, labels, args.plain_seconds)
    res["plain_cpu_share"] = (time.process_time() - c0) / (time.time() - w0)
    rec = apply_overrides(load_recipe(args.recipe), epochs=args.epochs, val_fraction=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        log = []
        c0, w0 = time.process_time(), time.time()
        train.fit("wnet", images, labels, classes=cells.classes, recipe=rec, out_dir=tmp, progress=False,
                  on_epoch_end=log.append)
        res["trainer_cpu_share"] = (time.process_time() - c0) / (time.time() - w0)
        res["trainer_train_ips_per_epoch"] = [r["images_per_s"] for r in log]
        res["trainer_train_ips"] = max(r["images_per_s"] for r in log[1:] or log)  # epoch 1 includes warm-up
        pred = classifiers.load_run(tmp, device="cpu", tta=False)
        model = pred.model
        pred.predict(images[:128])
        t0 = time.time()
        pred.predict(images)
        res["predictor_infer_ips"] = len(images) / (time.time() - t0)
        pred_tta = Predictor(model, pred.config, device="cpu", tta=True)
        t0 = time.time()
        pred_tta.predict(images[:256])
        res["predictor_tta_infer_ips"] = 256 / (time.time() - t0)
        res["plain_infer_ips"] = plain_infer(model.float(), images)
    res["recipe"] = args.recipe
    res["loadavg_after"] = os.getloadavg()
    res["train_speedup"] = res["trainer_train_ips"] / res["plain_train_ips"]
    res["infer_speedup"] = res["predictor_infer_ips"] / res["plain_infer_ips"]
    print(json.dumps(res, indent=2))
    if args.out:
        from classifiers.runtime import atomic_write_json
        atomic_write_json(args.out, res)


if __name__ == "__main__":
    main()
