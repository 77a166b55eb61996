"""Classification metrics from one confusion matrix (vectorised), the per-fold table of the
W-Net paper (Table 9 shape) and a confusion-matrix PNG drawn with PIL.

Definitions (per class c, one-vs-rest counts TP, FP, FN, TN; rows = true, columns = predicted):
precision = PPV = TP/(TP+FP); recall = sensitivity = TP/(TP+FN) (the papers' per-class
"accuracy"); specificity = TN/(TN+FP); NPV = TN/(TN+FN); F1 = 2·P·R/(P+R).
A ratio with a zero denominator is 0 for a class that has test images, and ``None`` (JSON
null) for a class with no test images; macro averages run over classes with test images.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from classifiers.runtime import atomic_write_bytes

PER_CLASS_KEYS = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "ppv", "npv")


def confusion_matrix(y_true, y_pred, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(y_true, dtype=torch.int64).flatten()
    p = torch.as_tensor(y_pred, dtype=torch.int64).flatten()
    if len(t) != len(p):
        raise ValueError("y_true and y_pred differ in length")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).view(num_classes, num_classes)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))


def report_from_confusion(cm: torch.Tensor, classes) -> dict:
    """The ``test`` block of results.json from a C×C confusion matrix."""
    cm = torch.as_tensor(cm, dtype=torch.float64)
    n = cm.sum()
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = n - tp - fp - fn
    support = cm.sum(1)
    present = support > 0
    prec, rec = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    vals = {
        "precision": prec, "recall": rec, "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * prec * rec, prec + rec), "npv": _ratio(tn, tn + fn),
    }
    vals |= {"accuracy": rec, "sensitivity": rec, "ppv": prec}
    per_class = {}
    for i, c in enumerate(classes):
        row = {k: (float(vals[k][i]) if present[i] else None) for k in PER_CLASS_KEYS}
        row["support"] = int(support[i])
        per_class[c] = row
    macro = {k: (float(vals[k][present].mean()) if present.any() else None) for k in PER_CLASS_KEYS}
    return {
        "n": int(n),
        "accuracy": float(tp.sum() / n) if n > 0 else None,
        "balanced_accuracy": macro["recall"],
        "macro": macro,
        "per_class": per_class,
        "confusion_matrix": cm.to(torch.int64).tolist(),
    }


def classification_report(y_true, y_pred, classes) -> dict:
    """Per-class and macro metrics + confusion matrix (the ``test`` block of results.json)."""
    return report_from_confusion(confusion_matrix(y_true, y_pred, len(classes)), classes)


def fold_row(fold: int, report: dict, **extra) -> dict:
    """One ``per_fold`` entry: the fold's accuracy, balanced accuracy, macro F1 and per-class
    accuracy (= recall), as in the W-Net paper's Table 9."""
    return {
        "fold": fold,
        "n_test": report["n"],
        "accuracy": report["accuracy"],
        "balanced_accuracy": report["balanced_accuracy"],
        "macro_f1": report["macro"]["f1"],
        "per_class_accuracy": {c: v["recall"] for c, v in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
        **extra,
    }


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def fold_table(per_fold: list[dict], classes) -> str:
    """Markdown table, one row per fold, one column per class (per-class accuracy), plus
    overall accuracy, and an average row — the shape of the W-Net paper's Table 9."""
    abbrev = [c[:2].upper() + "." for c in classes]
    lines = ["| | " + " | ".join(abbrev) + " | Acc. | Bal. acc. |",
             "|---|" + "---|" * (len(classes) + 2)]
    for row in per_fold:
        cells = [_pct(row["per_class_accuracy"].get(c)) for c in classes]
        lines.append(f"| Fold-{row['fold']} | " + " | ".join(cells)
                     + f" | {_pct(row['accuracy'])} | {_pct(row['balanced_accuracy'])} |")

    def avg(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    cells = [_pct(avg([r["per_class_accuracy"].get(c) for r in per_fold])) for c in classes]
    lines.append("| Avr. Acc. | " + " | ".join(cells) + f" | {_pct(avg([r['accuracy'] for r in per_fold]))}"
                 f" | {_pct(avg([r['balanced_accuracy'] for r in per_fold]))} |")
    return "\n".join(lines) + "\n"


def confusion_png(cm, classes, path: str | Path, title: str = "") -> None:
    """Draw the confusion matrix (rows = true class, columns = predicted) as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    cm = torch.as_tensor(cm, dtype=torch.float64)
    k = len(classes)
    cell, left, top = 84, 120, 110 if title else 90
    img = Image.new("RGB", (left + k * cell + 20, top + k * cell + 40), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    row_tot = cm.sum(1, keepdim=True).clamp_min(1)
    frac = cm / row_tot
    if title:
        d.text((10, 8), title, fill="black", font=font)
    d.text((left, top - 60), "predicted class", fill="black", font=font)
    d.text((10, top - 30), "true class", fill="black", font=font)
    for j, c in enumerate(classes):
        d.text((left + j * cell + 4, top - 30), c[:10], fill="black", font=font)
    for i, c in enumerate(classes):
        y = top + i * cell
        d.text((10, y + cell // 2 - 8), c[:14], fill="black", font=font)
        for j in range(k):
            x = left + j * cell
            f = float(frac[i, j])
            shade = (int(255 - 200 * f), int(255 - 140 * f), 255)   # white → blue by row share
            d.rectangle([x, y, x + cell - 2, y + cell - 2], fill=shade, outline="gray")
            txt = str(int(cm[i, j]))
            d.text((x + 8, y + cell // 2 - 16), txt, fill="white" if f > 0.55 else "black", font=font)
            d.text((x + 8, y + cell // 2 + 2), f"{100 * f:.0f}%", fill="white" if f > 0.55 else "black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
