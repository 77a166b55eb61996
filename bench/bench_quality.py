"""Synthetic-cell quality benchmark (issue 12): one command per row of bench/RESULTS.md.

    python bench/bench_quality.py --method fast --minutes 60     # per-class DCGANs, 12 min each
    python bench/bench_quality.py --method cond --minutes 60     # one conditional model, 60 min
    python bench/bench_quality.py --method FILE.toml --minutes 15 --label my-try
    python bench/bench_quality.py --method proj --minutes 11 --cpu-budget   # ablation: 11 CPU minutes

On a fixed leak-free split of pbc-dev (wbcgen.data.splits.make_split: 80/20 stratified,
seed 0, keyed by sha256, so duplicate images never straddle the parts):

1. trains the generator(s) on the TRAIN part for a wall-clock budget (``train-gan --minutes``:
   per-class runs share it, a conditional model gets all of it), one torch thread by
   default; ``--cpu-budget`` counts the budget in this process's CPU time instead, so that
   ablation rows run side by side (or on a busy machine) get equal CPU;
2. samples ``-n`` (1,000) cells per class;
3. TSTR: a W-Net and a WBCsNet trained on the synthetic cells only (``--tstr-epochs``),
   tested on the real TEST part: balanced accuracy and per-class recall, the mean over
   ``--tstr-seeds`` (3) classifier seeds with the sd (one seed moved rows by several points);
4. check 1: a W-Net trained on the TRAIN part (cached in ``--real-wnet``, shared by rows)
   classifies the synthetic cells, per class;
5. per-class W-Net-feature FD and KID of the synthetic cells against the TEST part, with the
   matched real-vs-real floor (``wbcgen.metrics.distance_report``: test half A vs test half
   B, against test half A vs a synthetic subset of half B's size). The feature W-Net saw the
   train part, whose features are therefore tighter than those of unseen images; only the
   test part is unseen by both the W-Net and the GAN, so both sides of the floor come from it;
6. a picture: real test cells beside synthetic ones, one row per class (bench/quality_<label>.png);
7. appends one row to the table in bench/RESULTS.md (method, budget, CPU minutes, load, commit)
   and writes everything to ``<out>/<label>/results.json``.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

if "--cpu-budget" in sys.argv:  # set before torch loads OpenMP: idle threads then sleep instead of spin-waiting, so a
    # row sharing the CPU is not charged CPU time for spinning (session 28: 2 spinning threads beside one other job got
    # ~35 % fewer GAN steps for the same CPU minutes; session 29: passive = same steps per CPU second when alone)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifiers.recipes import deep_merge, load_recipe  # noqa: E402
from classifiers.train import fit  # noqa: E402
from wbcgen import metrics  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split, load_split, make_split, save_split  # noqa: E402
from wbcgen.gan import find_runs, load_config, load_generator, sample_to_folder  # noqa: E402
from wbcgen.gan import train as gan_train  # noqa: E402
from wbcgen.gan.schedule import train_gans  # noqa: E402
from wbcgen.gan.runs import member_records  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pbc-dev"
SHORT = {"neutrophil": "N", "eosinophil": "E", "basophil": "B", "lymphocyte": "L", "monocyte": "M"}
TABLE_HEAD = "## Synthetic-cell quality (`bench/bench_quality.py`)"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def the_split(cells, out: Path) -> dict:
    path = out / "split.json"
    if path.is_file():
        return load_split(path)
    split = make_split(cells, test_fraction=0.2, seed=0)
    save_split(path, split)
    return split


def train_generators(train, method: str, minutes: float, runs: Path, seed: int, split: dict | None = None) -> dict:
    """The generators of a row, like ``train-gan --cls all --minutes M`` (wbcgen.gan.schedule.train_gans)."""
    cfg = load_config(method)
    t0, c0 = time.perf_counter(), cpu_s()
    classes = [c for c in CLASSES if train.counts().get(c)]
    done = train_gans(train, classes, config=cfg, out_root=runs, minutes=minutes, seed=seed, progress=False,
                      split=split)
    steps = {c: _steps(run) for c, run in done.items()}
    return {"config": cfg.name, "conditional": cfg.conditional, "steps": steps,
            "wall_min": round((time.perf_counter() - t0) / 60, 2), "cpu_min": round((cpu_s() - c0) / 60, 2)}


def _steps(run: Path):
    """A run's steps; an ensemble's: each member's (``members = k`` configs)."""
    steps = [m["steps"] for m in member_records(run)]
    return steps if json.loads((run / "config.json").read_text()).get("ensemble") else steps[0]


def recipe(name: str, epochs: int) -> dict:
    return deep_merge(load_recipe(name), {"train": {"epochs": epochs}})


def finished(out_dir: Path, rec: dict, n_train: int, n_test: int, seed: int) -> dict | None:
    """The results of a classifier run in ``out_dir`` that finished with this recipe and seed on
    training and test sets of these sizes (sampling and training are seeded, so a row
    restarted with ``--reuse-gan`` reproduces it), else None."""
    try:
        res = json.loads((out_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    test = res.get("test") or {}
    same = (res.get("recipe") == rec and (res.get("data") or {}).get("n") == n_train + n_test
            and test.get("n") == n_test and (res.get("protocol") or {}).get("seed") == seed)
    return res if same else None


def classifier_report(model: str, rec: dict, images, labels, test, out_dir: Path, seed: int,
                      reuse: bool = False) -> dict:
    res = finished(out_dir, rec, len(images), len(test), seed) if reuse else None
    if res is None:
        res = fit(model, images, labels, classes=list(CLASSES), recipe=rec, out_dir=out_dir,
                  test=(test.images, test.labels), seed=seed, progress=False, overwrite=True)
    t = res["test"]
    return {"balanced_accuracy": t["balanced_accuracy"],
            "recall": {c: t["per_class"][c]["recall"] for c in CLASSES}}


def tstr_report(model: str, rec: dict, images, labels, test, out_dir: Path, seeds: list[int],
                reuse: bool = False) -> dict:
    """TSTR with one classifier per seed (the first in ``out_dir``, seed s in ``out_dir``-s<s>): the
    mean balanced accuracy and per-class recall over the seeds, with the sd and every seed's numbers."""
    reps = [classifier_report(model, rec, images, labels, test,
                              out_dir if i == 0 else out_dir.with_name(f"{out_dir.name}-s{s}"), s, reuse)
            for i, s in enumerate(seeds)]
    return mean_report(reps, seeds)


def mean_report(reps: list[dict], seeds: list[int]) -> dict:
    """Mean (and sample sd, n-1) of per-seed ``classifier_report`` results."""
    import statistics

    if len(reps) == 1:
        return reps[0] | {"seeds": list(seeds)}
    bal = [r["balanced_accuracy"] for r in reps]
    return {"balanced_accuracy": statistics.fmean(bal), "balanced_accuracy_sd": statistics.stdev(bal),
            "recall": {c: statistics.fmean(r["recall"][c] for r in reps) for c in CLASSES},
            "seeds": list(seeds), "per_seed": reps}


def paired(rep: dict | None, base: dict | None) -> str:
    """Per-classifier-seed balanced-accuracy differences rep − base in points ("+1.2 / -0.4 / ..."); "" unless
    both reports have per-seed results."""
    if not rep or not base or "per_seed" not in rep or "per_seed" not in base:
        return ""
    return " / ".join(f"{100 * (r['balanced_accuracy'] - b['balanced_accuracy']):+.1f}"
                      for r, b in zip(rep["per_seed"], base["per_seed"]))


def tstr_cell(d: dict) -> str:
    """A TSTR table cell: bold balanced accuracy (± sd over the seeds), then per-class recall."""
    sd = f" ± {100 * d['balanced_accuracy_sd']:.1f}, {len(d['seeds'])} seeds" if "balanced_accuracy_sd" in d else ""
    return f"**{pct(d['balanced_accuracy'])}**{sd} ({per_class(d['recall'])})"


def real_wnet(train, test, where: Path, epochs: int, seed: int):
    """The W-Net trained on the TRAIN part only (shared by rows; a lock keeps parallel rows
    from training it twice)."""
    import classifiers

    where.mkdir(parents=True, exist_ok=True)
    with open(where.parent / f".{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = where / "bench_info.json"
        if not info.is_file():
            rep = classifier_report("wnet", recipe("wnet-cpu", epochs), train.images, train.labels, test,
                                    where / "run", seed)
            info.write_text(json.dumps({"epochs": epochs, "test": rep, "n_train": len(train)}))
    return classifiers.load_run(where / "run"), json.loads(info.read_text())


def judge(syn, train, test, *, real_wnet_dir: Path, real_epochs: int, tstr_epochs: int, seeds: list[int],
          runs: Path, picture_path: Path, seed: int = 0, reuse: bool = False, say=None,
          models: tuple[str, ...] = ("wnet", "wbcsnet")) -> dict:
    """A synthetic set judged as a row judges it: check 1 and W-Net-feature FD in the train-part W-Net, the
    picture, then TSTR W-Net and WBCsNet (``models``) at ``seeds`` (classifier runs under ``runs``/tstr-*).
    ``say``: called with the result so far after check 1 (a progress line)."""
    pred, info = real_wnet(train, test, real_wnet_dir, real_epochs, seed)
    y = pred.predict(syn.images)
    r = {"real_wnet": info,
         "check1": {c: float((y[syn.labels == k] == k).float().mean()) for k, c in enumerate(CLASSES)},
         "fd": distances(pred, test, syn, seed)}
    if say is not None:
        say(r)
    picture(test, syn, picture_path)
    for m in models:
        r[f"tstr_{m}"] = tstr_report(m, recipe(f"{m}-cpu", tstr_epochs), syn.images, syn.labels, test,
                                     runs / f"tstr-{m}", seeds, reuse=reuse)
    return r


def distances(pred, test, syn, seed: int) -> dict:
    f_test, f_syn = pred.features(test.images).double(), pred.features(syn.images).double()
    return {c: class_distance(f_test[test.labels == k], f_syn[syn.labels == k], seed + k)
            for k, c in enumerate(CLASSES)}


def class_distance(f_real, f_syn, seed: int) -> dict:
    """One class's W-Net-feature FD / KID at matched sizes, the real-vs-real floor and FD ÷ floor
    (10 half-splits): a row's column, and each point of bench_curve.py."""
    r = metrics.distance_report(f_real, f_syn, seed=seed, splits=10)
    m, f = r.get("matched") or {}, r.get("floor") or {}
    out = {"fd_matched": m.get("fd"), "fd_floor": f.get("fd"), "kid_matched": m.get("kid"),
           "kid_floor": f.get("kid"), "n_real": r["n_real"]}
    fm, ff = _num(m.get("fd")), _num(f.get("fd"))
    out["fd_ratio"] = round(fm / ff, 2) if fm is not None and ff else None
    # fidelity and diversity apart (precision / density vs recall / coverage), same halves protocol
    p = metrics.prdc_report(f_real, f_syn, seed=seed, splits=10)
    if p["floor"]:
        out["prdc_matched"], out["prdc_floor"] = metrics.prdc_means(p["matched"]), metrics.prdc_means(p["floor"])
    return out


def _num(v):
    if isinstance(v, dict):
        v = v.get("mean", v.get("value"))
    return float(v) if isinstance(v, (int, float)) else None


def picture(test, syn, path: Path, k: int = 6, size: int = 64) -> None:
    """One row per class: k real test cells, a gap, k synthetic cells (downscaled to keep it small)."""
    import torch.nn.functional as F
    from torchvision.utils import save_image

    g = torch.Generator().manual_seed(0)
    rows = []
    for j, _ in enumerate(CLASSES):
        parts = []
        for cells in (test, syn):
            idx = torch.nonzero(cells.labels == j).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)[:k]]
            parts.append(cells.images[idx].float() / 255)
        gap = torch.ones(1, 3, 128, 128)
        rows.append(torch.cat([parts[0], gap, parts[1]]))
    x = F.interpolate(torch.cat(rows), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x.clamp(0, 1), path, nrow=2 * k + 1, padding=2, pad_value=1.0)


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def per_class(d: dict) -> str:
    return " ".join(f"{SHORT[c]} {pct(d.get(c))}" for c in CLASSES)


def append_row(table: Path, r: dict) -> None:
    fd = " ".join(f"{SHORT[c]} {r['fd'][c]['fd_ratio']}" for c in CLASSES)
    budget = f"{r['minutes']:g}" + (" CPU" if r.get("budget_clock") == "cpu" else "")
    row = (f"| {r['date']} | {r['label']} | {budget} | {r['gan']['cpu_min']} ({r['gan']['wall_min']} wall) | "
           f"{r['load_start'][0]} → {r['load_end'][0]} | "
           f"{tstr_cell(r['tstr_wnet'])} | {tstr_cell(r['tstr_wbcsnet'])} | "
           f"{per_class(r['check1'])} | {fd} | {r['commit']} |\n")
    text = table.read_text(encoding="utf-8") if table.is_file() else "# Benchmark results\n"
    if TABLE_HEAD not in text:
        text += (f"\n{TABLE_HEAD}\n\n"
                 "Leak-free: pbc-dev split 80/20 (seed 0, sha256-keyed); GANs and the check-1/feature W-Net see only "
                 f"the train part; TSTR classifiers train on {r['n_per_class']:,} synthetic cells per class and are "
                 f"tested on the real test part ({r['n_test']} cells). Per class: N neutrophil, E eosinophil, B basophil, L lymphocyte, "
                 "M monocyte. FD ratio = matched W-Net-feature FD ÷ real-vs-real floor (1 = as close as real cells "
                 "are to each other). Load = 1-minute load average at start → end.\n\n"
                 "| date | method | budget (min) | GAN CPU min | load | TSTR W-Net bal. acc % (per class recall) | "
                 "TSTR WBCsNet bal. acc % (per class) | check 1 % (real-trained W-Net on synthetic) | "
                 "FD ÷ floor | commit |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = text.rstrip("\n").split("\n")
    head = lines.index(TABLE_HEAD)
    end = head + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    # the section's FIRST table is the results table (notes below it may hold other tables)
    first = next(i for i in range(head, end) if lines[i].startswith("|"))
    last = first
    while last + 1 < end and lines[last + 1].startswith("|"):
        last += 1
    lines.insert(last + 1, row.rstrip("\n"))
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="fast64", help="GAN config: fast64, fast64x2 (an ensemble), fast, cond, paper, tiny or a TOML/JSON file")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock GAN training budget (all classes)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--label", default=None, help="row name (default: METHOD-MINUTESmin)")
    ap.add_argument("-n", type=int, default=1000, help="synthetic cells per class")
    ap.add_argument("--tstr-epochs", type=int, default=5, help="epochs of the TSTR W-Net / WBCsNet (CPU-sized)")
    ap.add_argument("--tstr-seeds", type=int, default=3,
                    help="TSTR classifiers per model, seeds SEED, SEED+1, ... (the table shows mean ± sd): one "
                         "5-epoch classifier moves a row by several points")
    ap.add_argument("--tstr-models", default="wnet,wbcsnet",
                    help="TSTR classifiers (comma-separated; a row for the table needs both: give --no-table otherwise)")
    ap.add_argument("--real-epochs", type=int, default=8, help="epochs of the train-part W-Net")
    ap.add_argument("--real-wnet", default=None, help="cache folder of the train-part W-Net (default OUT/real-wnet-eEPOCHS)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpu-budget", action="store_true",
                    help="count --minutes in this process's CPU time instead of wall-clock time (ablation rows "
                         "taken side by side, or on a busy machine, then get equal CPU)")
    ap.add_argument("--reuse-gan", action="store_true", help="reuse the row's trained generators (OUT/LABEL/gan.json) and its "
                         "finished TSTR classifiers (same recipe and set sizes)")
    ap.add_argument("--gan-from", default=None, metavar="LABEL",
                    help="sample the generators another row trained (OUT/LABEL/gan-runs) instead of training any")
    ap.add_argument("--no-refiner", action="store_true",
                    help="sample with the generators' detail refiners switched off (refine_steps configs): with "
                         "--gan-from, the same GANs with and without their refiner")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gan-seed", type=int, default=None,
                    help="seed of the GAN training only (default --seed): a second generator set at equal "
                         "sampling and TSTR seeds")
    ap.add_argument("--table", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-table", action="store_true", help="write results.json only")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.cpu_budget:
        gan_train.budget_clock = time.process_time
    models = tuple(m for m in a.tstr_models.split(",") if m)
    if not set(models) <= {"wnet", "wbcsnet"} or not models:
        raise SystemExit(f"--tstr-models {a.tstr_models}: choose from wnet, wbcsnet")
    if set(models) != {"wnet", "wbcsnet"} and not a.no_table:
        raise SystemExit("the results table has a column for each TSTR classifier: give --no-table with --tstr-models")
    label = a.label or f"{Path(a.method).stem}-{a.minutes:g}{'cpu' if a.cpu_budget else ''}min"
    out = Path(a.out)
    row_dir = out / label
    row_dir.mkdir(parents=True, exist_ok=True)
    r = {"label": label, "method": a.method, "minutes": a.minutes, "date": time.strftime("%Y-%m-%d %H:%M"),
         "load_start": load(), "commit": commit(), "threads": a.threads, "n_per_class": a.n,
         "budget_clock": "cpu" if a.cpu_budget else "wall", "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
         "gan_seed": a.seed if a.gan_seed is None else a.gan_seed}
    print(f"[{label}] start, load {r['load_start']}", flush=True)
    cells = load_cells(a.data, progress=False)
    split = the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    r["n_train"], r["n_test"] = len(train), len(test)
    gan_dir = out / a.gan_from if a.gan_from else row_dir
    gan_json = gan_dir / "gan.json"
    if a.gan_from:
        if not gan_json.is_file():
            raise SystemExit(f"--gan-from {a.gan_from}: {gan_json} does not exist (train that row first)")
        r["gan"] = json.loads(gan_json.read_text()) | {"from_row": a.gan_from}
    elif a.reuse_gan and gan_json.is_file():  # a row interrupted after training: keep its generators
        r["gan"] = json.loads(gan_json.read_text())
    else:
        r["gan"] = train_generators(train, a.method, a.minutes, row_dir / "gan-runs",
                                    a.seed if a.gan_seed is None else a.gan_seed)
        gan_json.write_text(json.dumps(r["gan"]))
    print(f"[{label}] GAN done: {r['gan']}, load {load()}", flush=True)
    gens = {c: load_generator(p) for c, p in find_runs(gan_dir / "gan-runs").items()}
    if a.no_refiner:
        for g in gens.values():
            g = getattr(g, "g", g)  # a conditional model's one-class view
            if g.refiner is None:
                raise SystemExit("--no-refiner: these generators have no detail refiner")
            g.refiner.trained.fill_(0)
        r["refiner"] = "off"
    syn_dir = sample_to_folder(gens, a.n, row_dir / "synthetic", seed=a.seed, overwrite=True, progress=False)
    syn = load_cells(syn_dir, progress=False)
    r["tstr_epochs"], r["real_epochs"] = a.tstr_epochs, a.real_epochs
    r |= judge(syn, train, test, real_wnet_dir=Path(a.real_wnet or out / f"real-wnet-e{a.real_epochs}"),
               real_epochs=a.real_epochs, tstr_epochs=a.tstr_epochs,
               seeds=[a.seed + i for i in range(max(1, a.tstr_seeds))], runs=row_dir,
               picture_path=ROOT / "bench" / f"quality_{label}.png", seed=a.seed, reuse=a.reuse_gan, models=models,
               say=lambda j: print(f"[{label}] check 1 {j['check1']}, load {load()}", flush=True))
    r["load_end"] = load()
    (row_dir / "results.json").write_text(json.dumps(r, indent=1))
    if not a.no_table:
        append_row(Path(a.table), r)
    print(json.dumps({k: r[k] for k in ("label", "gan", "tstr_wnet", "tstr_wbcsnet", "check1") if k in r}, indent=1))


if __name__ == "__main__":
    main()
