"""Why the few-shot fine-tune stays near 80 % on zheng2018 (issue 14, session 19): variants of the
K-shot fine-tune from a finished ``bench_robust.py --budget full`` row's source, and its ceiling.

Every variant fine-tunes the row's source W-Net with ``wnet-fewshot`` at ``transfer.lr`` (what
``train-classifier --init-from RUN --recipe wnet-fewshot`` does) on the row's per-lab stain-mapped
zheng2018 images, on the same draws as the row's curve (``few_shot_splits(seed 0)``, 3 draws of K per
class, basophils capped at 3), tested on the rest:

- ``base``      the row's own curve point (a reproduction check);
- ``tta``       + 8-view test-time augmentation at evaluation;
- ``replayN``   + N pbc-dev images per class from the source's TRAINING part (never its hold-out) in
                every draw's training set, so the fine-tune keeps the source task in view (with TTA);
- ``bnfrozen``  the fine-tune with BatchNorm in eval mode (``train.freeze_bn``: source statistics kept;
                with TTA) — for BatchNorm networks such as resnet18s;
- ``lp``        the linear probe alone: the head on the frozen trunk (lr 1e-2, 20 epochs; with TTA);
- ``lpft``      linear probe, then fine-tune (LP-FT, Kumar et al. 2022): the head alone first
                (frozen trunk, lr 1e-2, 20 epochs), the whole network from there (with TTA);
- ``cv5``       the ceiling: 5-fold CV over ALL of zheng2018 (~320 training images a fold, ~67 % of
                them neutrophils) with the same fine-tune — what labelled data beyond K buys.

    python bench/diag_fewshot.py mkl-lab-scale base tta replay20 lpft cv5

Prints one line per variant (accuracy, balanced accuracy, 4-class balanced accuracy without zheng2018's
four basophils, per-class recall) and appends it to bench/diag_fewshot_ROW.jsonl. Run folders under
runs/diag-fewshot/ROW/ (a finished variant is read back, not retrained).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_robust as br  # noqa: E402
from bench_quality import commit  # noqa: E402
from classifiers import recipes, stain  # noqa: E402
from classifiers.fewshot import few_shot_splits  # noqa: E402
from classifiers.splits import stratified_holdout, stratified_kfold  # noqa: E402
from classifiers.train import run_protocol  # noqa: E402

FOLDS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row")
    ap.add_argument("variants", nargs="+", help="base, tta, replayN, bnfrozen, lp, lpft, cv5")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out-root", default="runs/bench-robust/full", help="where the row's source run is")
    a = ap.parse_args()
    torch.set_num_threads(2)
    row = json.loads(br.result_path(a.row, "full").read_text())
    src = Path(a.out_root) / a.row / "source"
    pbc, zheng, _ = br.load(row["crop"], ROOT / "runs" / "bench-robust" / "cache")
    src_cfg = json.loads((src / "config.json").read_text())
    norm = src_cfg.get("stain_norm")
    zimg = br.normalise(norm, zheng)                 # what the row's few-shot runs train and test on
    base = recipes.load_recipe("wnet-fewshot")
    base["train"]["lr"] = base["transfer"]["lr"]     # classifiers.transfer.for_transfer with init_from
    base["model"], base["model_args"] = br.source_network(src_cfg)   # W-Net or resnet18s, as the source
    draws = few_shot_splits(zheng.labels, a.k, FOLDS, 0, len(zheng.classes))[0]
    runs = ROOT / "runs" / "diag-fewshot" / a.row
    for v in a.variants:
        rec, images, labels, splits, t0 = copy.deepcopy(base), zimg, zheng.labels, draws, time.time()
        rec["eval"]["tta"] = v != "base"
        if v.startswith("replay"):
            images, labels, splits = replay(pbc, zheng, zimg, norm, draws, int(v[6:]))
        if v == "bnfrozen":   # BatchNorm layers keep the source's statistics while the whole network trains
            rec["train"]["freeze_bn"] = True
        if v == "cv5":
            rec["eval"]["tta"] = False
            splits = [{"train": torch.as_tensor(tr), "test": torch.as_tensor(te)}
                      for tr, te in stratified_kfold(zheng.labels, 5, 0)]
        reports = []
        for f, s in enumerate(splits):
            init = src
            head = copy.deepcopy(rec)
            head["train"].update(freeze_trunk=True, lr=1e-2, epochs=20, weight_decay=1e-4)
            if v == "lp":     # the head alone on the frozen trunk (kept in eval mode: BatchNorm statistics too)
                reports.append(fit(head, images, labels, zheng.classes, s, f, src, runs / f"lp-{f}")["test"])
                continue
            if v == "lpft":   # the head alone on the frozen trunk first, the whole network from there
                init = runs / f"lp-{f}"
                fit(head, images, labels, zheng.classes, s, f, src, init)
            reports.append(fit(rec, images, labels, zheng.classes, s, f, init, runs / f"{v}-k{a.k}-{f}")["test"])
        line = summary(v, a.k, reports, br.common_classes(zheng), time.time() - t0)
        print(json.dumps(line), flush=True)
        with open(ROOT / "bench" / f"diag_fewshot_{a.row}.jsonl", "a") as fh:
            fh.write(json.dumps(line | {"commit": commit(), "load_average": os.getloadavg()}) + "\n")


def fit(rec, images, labels, classes, split, f, init, out) -> dict:
    return run_protocol(rec["model"], images, labels, classes=classes, recipe=rec, out_dir=out, splits=[split],
                        protocol={"kind": "few-shot"}, seed=1000 * f, init_from=init, resume=True,
                        progress=False, device="cpu")


def replay(pbc, zheng, zimg, norm, draws, per_class: int):
    """zheng2018 + ``per_class`` pbc-dev training-part images per class (through the source's own
    normaliser, as the source trained on them) added to every draw's training set."""
    keep, _ = stratified_holdout(pbc.labels, 0.2, 0)   # bench_robust's source split: never its hold-out
    src = br.subset(pbc.subset(keep), per_class, seed=1)
    remap = torch.tensor([zheng.classes.index(c) for c in src.classes])
    n = len(zheng)
    extra = torch.arange(n, n + len(src))
    splits = [{"train": torch.cat([s["train"], extra]), "test": s["test"]} for s in draws]
    return torch.cat([zimg, stain.apply(norm, src.images)]), torch.cat([zheng.labels, remap[src.labels]]), splits


def summary(v: str, k: int, reports: list[dict], common: list[str], seconds: float) -> dict:
    def mean(xs):
        return round(100 * sum(xs) / len(xs), 1)
    recall = [{c: p["recall"] for c, p in r["per_class"].items()} for r in reports]
    return {"variant": v, "k": k if v != "cv5" else None, "draws": len(reports),
            "accuracy": mean([r["accuracy"] for r in reports]),
            "balanced_accuracy": mean([r["balanced_accuracy"] for r in reports]),
            "balanced_accuracy_common": mean([br.common_balanced(r, common) for r in recall]),
            "recall": {c: mean([r[c] or 0.0 for r in recall]) for c in common}, "minutes": round(seconds / 60, 1)}


if __name__ == "__main__":
    main()
