"""Retrain some classes of a finished bench_quality row with a config variant, keep the others (issue 12,
session 20).

A full row costs ~85 minutes and its TSTR moves by several points between GAN seed pairs. This is the
controlled, cheaper comparison: the row's own generators for every class except ``--classes``, which are
retrained with the row's config + the variant, its GAN seed, the train part of bench_quality's split
(seed 0) and the row's CPU-time share per class (``--cpu-minutes``; the budget is CPU time, so the
load beside it moves only the wall time). The synthetic set is sampled exactly as bench_quality samples
it (same call, same seed), so with an empty variant the unchanged classes' cells are the row's cells,
bit for bit, and the row's own TSTR is the control. Then check 1 (the train-part W-Net) and TSTR W-Net
(and with ``--wbcsnet`` WBCsNet) over ``--tstr-seeds`` classifier seeds, tested on the real test part.

    python bench/diag_swap.py fast64x2-cap450-g2-cpu118 nocolor:diffaug=translation,cutout \\
        --classes basophil,monocyte          # -> bench/diag_swap_ROW.jsonl, runs/diag-swap/ROW/NAME/
    python bench/diag_swap.py fast64x2-cap450-g2-cpu118 nocolor-b: --classes basophil --gan-from nocolor
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_quality import DATA, commit, load, real_wnet, recipe, tstr_report  # noqa: E402
from diag_member import variant  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import find_runs, load_config, sample_to_folder, train_gan  # noqa: E402
from wbcgen.gan import train as gan_train  # noqa: E402
from wbcgen.gan.runs import member_records  # noqa: E402


def tstr(images, labels, test, out: Path, n_seeds: int, epochs: int, wbcsnet: bool, tag: str) -> dict:
    """TSTR W-Net (and WBCsNet) over classifier seeds 0..n_seeds-1 (runs in ``out``/tstr-MODEL*, finished ones
    read back), as ``{"tstr_wnet": {balanced_accuracy, sd, per_seed, recall}, ...}`` in percent."""
    res = {}
    for model, rec in [("wnet", "wnet-cpu")] + ([("wbcsnet", "wbcsnet-cpu")] if wbcsnet else []):
        rep = tstr_report(model, recipe(rec, epochs), images, labels, test, out / f"tstr-{model}",
                          list(range(n_seeds)), reuse=True)
        res[f"tstr_{model}"] = {"balanced_accuracy": round(100 * rep["balanced_accuracy"], 1),
                                "sd": round(100 * rep.get("balanced_accuracy_sd", 0.0), 1),
                                "per_seed": [round(100 * r["balanced_accuracy"], 1) for r in rep.get("per_seed", [rep])],
                                "recall": {c: round(100 * v, 1) for c, v in rep["recall"].items()}}
        print(f"[{tag}] TSTR {model} {res[f'tstr_{model}']}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", help="a finished bench_quality row under --bench")
    ap.add_argument("variant", help="NAME:key=value,... (GanConfig keys over the row's config)")
    ap.add_argument("--classes", default="basophil,monocyte")
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="CPU minutes per retrained class (default: the row's GAN CPU minutes / 5)")
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--wbcsnet", action="store_true", help="also TSTR WBCsNet")
    ap.add_argument("--gan-from", default=None, help="take those of --classes that this earlier variant's folder "
                    "(same row) has from there instead of training them")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default="runs/bench-quality")
    ap.add_argument("--out", default="runs/diag-swap")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gan_train.budget_clock = time.process_time
    bench = Path(a.bench)
    row = json.loads((bench / a.row / "results.json").read_text())
    name, kv = variant(a.variant)
    classes = [c.strip() for c in a.classes.split(",") if c.strip()]
    cpu_min = a.cpu_minutes or row["gan"]["cpu_min"] / len(CLASSES)
    gan_seed, seed = row["gan_seed"], 0
    out = Path(a.out) / a.row / name
    cells = load_cells(DATA, progress=False)
    train = apply_split(cells, bench / "split.json", "train")
    test = apply_split(cells, bench / "split.json", "test")
    gens = find_runs(bench / a.row / "gan-runs")
    res = {"row": a.row, "variant": name, "overrides": kv, "classes": classes, "gan_seed": gan_seed,
           "cpu_min_per_class": round(cpu_min, 2), "date": time.strftime("%Y-%m-%d %H:%M"),
           "load_start": load(), "commit": commit(), "steps": {}}
    cfg = load_config(row["gan"]["config"]).replace(**kv) if kv else None
    reused = find_runs(Path(a.out) / a.row / a.gan_from / "gan-runs") if a.gan_from else {}
    reused = {c: r for c, r in reused.items() if c in classes}
    gens |= reused
    res["gan_from"] = {c: a.gan_from for c in reused}
    for c in [c for c in classes if c not in reused] if cfg is not None else []:
        t = time.time()
        gens[c] = train_gan(train, c, config=cfg.replace(name=f"{cfg.name}-{name}"), out_root=out / "gan-runs",
                            seed=gan_seed, progress=False, overwrite=True, minutes=cpu_min)
        recs = member_records(gens[c])
        res["steps"][c] = [m["steps"] for m in recs] if len(recs) > 1 else recs[0]["steps"]
        print(f"[{name}] {c}: steps {res['steps'][c]}, {(time.time() - t) / 60:.1f} wall min", flush=True)
    syn_dir = sample_to_folder(gens, 1000, out / "synthetic", seed=seed, overwrite=True, progress=False)
    syn = load_cells(syn_dir, progress=False)
    judge, _ = real_wnet(train, test, bench / f"real-wnet-e{row['real_epochs']}", row["real_epochs"], seed)
    y = judge.predict(syn.images)
    res["check1"] = {c: round(100 * float((y[syn.labels == k] == k).float().mean()), 1) for k, c in enumerate(CLASSES)}
    print(f"[{name}] check 1 {res['check1']}", flush=True)
    res |= tstr(syn.images, syn.labels, test, out, a.tstr_seeds, row["tstr_epochs"], a.wbcsnet, name)
    res["load_end"] = load()
    with open(ROOT / "bench" / f"diag_swap_{a.row}.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
