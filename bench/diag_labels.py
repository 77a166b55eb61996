"""Which zheng2018 cells every fine-tuned network calls something else (issue 14, session 22).

``bench/diag_fewshot.py ROW cv5`` fine-tunes a row's source on all of zheng2018 but a fifth, five times, so
every image is predicted once by a model that never saw it. This script reads those five runs back for
each ROW given, predicts each image with the fold that held it out, and reports the cells that EVERY row
gets wrong in the same way (same wrong class) — the candidates for label noise, or for cells no network
of this kind separates — with a picture: per confusion (true -> predicted, largest first), one row of
those cells, then one row of cells of the labelled class and one of the predicted class that every row
gets right (crops as loaded, before normalisation).

    python bench/diag_fewshot.py mkl-lab-scale-e60 cv5 && python bench/diag_fewshot.py resnet-lab-scale cv5
    python bench/diag_labels.py mkl-lab-scale-e60 resnet-lab-scale    # -> bench/diag_labels_zheng.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_robust as br  # noqa: E402
from classifiers import load_run  # noqa: E402
from classifiers.splits import stratified_kfold  # noqa: E402


def held_out_predictions(row: str, zheng) -> torch.Tensor:
    """Each zheng2018 image's class from the cv5 fold that held it out (row's per-lab stain map applied)."""
    src = ROOT / "runs" / "bench-robust" / "full" / row / "source"
    images = br.normalise(json.loads((src / "config.json").read_text()).get("stain_norm"), zheng)
    y = torch.full((len(zheng),), -1, dtype=torch.int64)
    for f, (_, te) in enumerate(stratified_kfold(zheng.labels, 5, 0)):
        te = torch.as_tensor(te)
        run = ROOT / "runs" / "diag-fewshot" / row / f"cv5-k20-{f}"
        y[te] = load_run(run, device="cpu", tta=False).predict(images[te])
    return y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="+", help="bench_robust rows whose cv5 runs exist (diag_fewshot.py ROW cv5)")
    ap.add_argument("-k", type=int, default=10, help="cells per picture row")
    ap.add_argument("--pairs", type=int, default=3, help="confusions pictured")
    a = ap.parse_args()
    torch.set_num_threads(2)
    crop = {json.loads(br.result_path(r, "full").read_text())["crop"] for r in a.rows}
    if len(crop) != 1:
        raise SystemExit(f"rows use different crops: {sorted(crop)}")
    _, zheng, _ = br.load(crop.pop(), ROOT / "runs" / "bench-robust" / "cache")
    preds = torch.stack([held_out_predictions(r, zheng) for r in a.rows])
    t = zheng.labels
    wrong_all = (preds != t).all(0) & (preds == preds[0]).all(0)
    right_all = (preds == t).all(0)
    names = zheng.classes
    out = {"rows": a.rows, "n": len(t), "accuracy": {r: round(float((p == t).float().mean()), 4) for r, p in zip(a.rows, preds)},
           "wrong_in_every_row_same_class": int(wrong_all.sum()), "wrong_in_any_row": int((preds != t).any(0).sum()),
           "by_source": {}, "pairs": {}}
    for source, g in br.sources(zheng).items():
        out["by_source"][source] = {"n": len(g), "wrong_in_every_row": int(wrong_all[g].sum())}
    cm = torch.zeros(len(names), len(names), dtype=torch.int64)
    cm.index_put_((t[wrong_all], preds[0][wrong_all]), torch.ones(int(wrong_all.sum()), dtype=torch.int64), accumulate=True)
    order = sorted(((int(cm[i, j]), i, j) for i in range(len(names)) for j in range(len(names)) if cm[i, j]), reverse=True)
    pics = []
    for n, i, j in order:
        out["pairs"][f"{names[i]} -> {names[j]}"] = n
    for n, i, j in order[:a.pairs]:
        for idx in (wrong_all & (t == i) & (preds[0] == j), right_all & (t == i), right_all & (t == j)):
            part = zheng.images[idx.nonzero().flatten()[:a.k]]
            pics.append(torch.cat([part, torch.full((a.k - len(part), *part.shape[1:]), 255, dtype=part.dtype)]))
    print(json.dumps(out, indent=1))
    path = ROOT / "bench" / "diag_labels_zheng.png"
    save_image(torch.cat(pics).float() / 255, path, nrow=a.k)
    (ROOT / "bench" / "diag_labels_zheng.json").write_text(json.dumps(out, indent=1) + "\n")
    print("picture:", path, "(per confusion: the cells every row calls the other class; that class's and the "
          "predicted class's cells every row gets right)")


if __name__ == "__main__":
    main()
