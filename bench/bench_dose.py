"""Scarce-data dose study (issues 11 part 6 and 12): one command, leak-free, with intervals.

    python bench/bench_dose.py --minutes 30 --cpu-budget --threads 2   # the default generator, all 5 folds
    python bench/bench_dose.py --method cond --minutes 30 --folds-to-run 0,1 --no-table
    python bench/bench_dose.py --minutes 30 --cpu-budget --threads 2 --resume   # later: the folds not yet finished

On pbc-dev (the same split every time: ``make_split(cells, per_class=30, folds=5, seed=0)``,
sha256-keyed, saved as OUT/split.json and reused), per fold k:

1. trains the generator(s) on that fold's TRAIN part only: the same 30 real cells per class
   the classifiers get (``wbcgen.gan.schedule.train_gans`` like bench_quality: per-class
   runs share the budget, a conditional model gets all of it; one torch thread by default);
2. samples ``-n`` (120) cells per class (``generation.json`` + training lists, so the
   leakage guard can check them);
3. runs the dose-response evaluation of ``wbcgen evaluate --train-on real --split OUT/split.json
   --fold k --synthetic DIR --dose 0,0.5,1,2,4 --recipe evaluate-scarce-cpu --epochs E``
   (the importable ``run_evaluation``): tested on the fold's TEST part, which no GAN and no
   classifier saw; the guard must report ``leakage.n_overlap == 0`` or the study stops.
   ``evaluate-scarce-cpu`` is ``evaluate-small-cpu`` without a validation slice: with one, 3
   of the 30 cells per class would pick the kept epoch although the GANs trained on them, and
   the guard refuses that (15 images on pbc-dev).

Then per ratio: mean balanced accuracy over the folds with a 95 % Student-t interval
(mean ± t(0.975, n−1) · sd / √n, sd with n−1), and the paired difference "ratio r minus
ratio 0" per fold (same fold, same real images, same test images) with its mean and 95 %
t-interval — "real + synthetic beats real only" when that interval lies above 0. Writes
OUT/results.json and appends a row to bench/RESULTS.md.

Every finished fold is also appended to ``bench/dose_folds.jsonl`` (committed; ``--ledger``): its settings,
the GANs' precision on the machine (bf16 / fp32), the machine's CPU, the split's sha256 and the result.
``--resume`` takes a fold from there when OUT lacks it — a study outlives its run folder and continues on a
new machine, but only with folds of the same split made with the same settings and precision (session 39:
the VM and runs/ were replaced, folds 0-1 of the default's study are in the ledger, transcribed from this
file's table).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "--cpu-budget" in sys.argv:  # as bench_quality: before torch loads OpenMP, so that idle threads sleep instead of
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting, which a CPU-time budget would charge

# two-sided 95 % Student-t quantiles t(0.975, df), df = 1..10 (standard tables)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
TABLE_HEAD = "## Scarce-data dose study (`bench/bench_dose.py`)"


def t975(df: int) -> float:
    """t(0.975, df): the table for df ≤ 10, beyond it the Cornish–Fisher expansion around
    z = 1.95996 (error < 0.002 for df > 10)."""
    if df < 1:
        raise ValueError("a t-interval needs at least two values")
    if df in T975:
        return T975[df]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval(values) -> dict:
    """Mean and 95 % Student-t interval of ``values`` (n ≥ 2; n = 1 gives no interval)."""
    v = [float(x) for x in values]
    n, m = len(v), statistics.fmean(v)
    if n < 2:
        return {"n": n, "mean": m, "half": None, "low": None, "high": None, "values": v}
    half = t975(n - 1) * statistics.stdev(v) / math.sqrt(n)
    return {"n": n, "mean": m, "half": half, "low": m - half, "high": m + half, "values": v}


def aggregate(per_fold: list[dict]) -> dict:
    """``per_fold``: one ``{ratio: balanced accuracy}`` per fold. Returns per ratio the mean and
    95 % t-interval over folds, and per ratio r > 0 the paired per-fold difference (r − 0)."""
    ratios = sorted({float(r) for f in per_fold for r in f})
    if any(set(map(float, f)) != set(ratios) for f in per_fold):
        raise ValueError("every fold must hold the same ratios")
    get = [{float(r): v for r, v in f.items()} for f in per_fold]
    out = {"ratios": ratios, "n_folds": len(per_fold),
           "method": "mean ± t(0.975, n-1)·sd/√n over folds (sd with n-1); paired: per-fold (ratio r − ratio 0)",
           "balanced_accuracy": {f"{r:g}": t_interval([f[r] for f in get]) for r in ratios}, "paired_vs_0": {}}
    if 0.0 in ratios:
        for r in ratios:
            if r > 0:
                d = t_interval([f[r] - f[0.0] for f in get])
                d["beats_real_only"] = d["low"] is not None and d["low"] > 0
                out["paired_vs_0"][f"{r:g}"] = d
    return out


def load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def cpu_s() -> float:
    s = r = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        u = resource.getrusage(who)
        s, r = s + u.ru_utime, r + u.ru_stime
    return s + r


def the_split(cells, out: Path, per_class: int, folds: int, seed: int) -> Path:
    from wbcgen.data.splits import load_split, make_split, save_split

    path = out / "split.json"
    if path.is_file():
        sp = load_split(path)
        if (sp.get("per_class"), sp.get("folds"), sp.get("seed")) != (per_class, folds, seed):
            raise SystemExit(f"{path} was made with other settings; use another --out")
    else:
        save_split(path, make_split(cells, per_class=per_class, folds=folds, seed=seed))
    return path


FOLD_KEYS = ("method", "minutes", "n", "epochs", "dose", "recipe", "per_class", "folds", "seed", "threads", "cpu_budget",
             "precision")
LEDGER = ROOT / "bench" / "dose_folds.jsonl"


def fold_key(a) -> dict:
    """The settings a finished fold's numbers depend on (``--resume`` keeps a fold only when they match),
    the GANs' arithmetic (``precision``: bf16 / fp32 on this machine) included."""
    return json.loads(json.dumps({k: getattr(a, k) for k in FOLD_KEYS}))


def machine() -> str:
    """This CPU's model name (Linux /proc/cpuinfo), recorded beside each fold in the ledger."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def finished_fold(fdir: Path, a, k: int | None = None, split_sha: str | None = None,
                  ledger: Path | None = None) -> dict | None:
    """The fold's saved result when it was made with the same settings, else None: OUT/fold-k/fold.json
    first, then the ledger (``bench/dose_folds.jsonl``, committed: a fold outlives its run folder) —
    a ledger line counts only for the same fold of the same split (its sha256)."""
    path = fdir / "fold.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == fold_key(a):
            return saved["result"]
    if ledger is None or k is None or split_sha is None or not ledger.is_file():
        return None
    found = None
    for line in ledger.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except ValueError:  # a blank line, or a line cut short by a killed run: not a finished fold
            continue
        if isinstance(e, dict) and e.get("fold") == k and e.get("split_sha256") == split_sha and e.get("settings") == fold_key(a):
            found = e["result"]  # the latest line wins
    return found


def save_fold(fdir: Path, a, result: dict, k: int | None = None, split_sha: str | None = None,
              ledger: Path | None = None) -> None:
    """OUT/fold-k/fold.json: the finished fold's result and the settings it was made with (atomic); with a
    ledger, one more line there (fold, split sha256, settings, machine, result), appended whole."""
    tmp = fdir / "fold.json.tmp"
    tmp.write_text(json.dumps({"settings": fold_key(a), "result": result}, indent=1))
    tmp.replace(fdir / "fold.json")
    if ledger is not None:
        line = json.dumps({"fold": k, "split_sha256": split_sha, "settings": fold_key(a), "machine": machine(),
                           "result": result}) + "\n"
        with open(ledger, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # start on a new line even after half a line left by a killed run
                f.seek(-1, os.SEEK_END)
                line = ("" if f.read(1) == b"\n" else "\n") + line
            f.write(line.encode("utf-8"))


def run_fold(k: int, cells, split_path: Path, a, out: Path) -> dict:
    from bench_quality import train_generators
    from wbcgen.data.splits import apply_split, load_split, split_hash, split_info
    from wbcgen.evaluate import run_evaluation
    from wbcgen.gan import find_runs, sample_to_folder

    fdir = out / f"fold-{k}"
    fdir.mkdir(parents=True, exist_ok=True)
    split = load_split(split_path)
    sha = split_hash(split)
    if a.resume and (done := finished_fold(fdir, a, k, sha, a.ledger)) is not None:
        print(f"[fold {k}] finished earlier with the same settings: kept (from {done.get('date')}, "
              f"{fdir / 'fold.json'} or {a.ledger})", flush=True)
        return done
    c0 = cpu_s()
    train = apply_split(cells, split, "train", k)
    gan_json = fdir / "gan.json"
    if a.reuse_gan and gan_json.is_file():
        gan = json.loads(gan_json.read_text())
    else:
        gan = train_generators(train, a.method, a.minutes, fdir / "gan-runs", a.seed,
                               split=split_info(split, split_path, k, "train"))
        gan_json.write_text(json.dumps(gan))
    print(f"[fold {k}] GAN on {len(train)} real cells {train.counts()}: {gan}, load {load()}", flush=True)
    syn = sample_to_folder(find_runs(fdir / "gan-runs"), a.n, fdir / "synthetic", seed=a.seed, overwrite=True,
                           progress=False)
    res = run_evaluation("real", real=cells, synthetic=syn, split=split_path, fold=k, dose=a.dose,
                         recipe=a.recipe, epochs=a.epochs, out_dir=fdir / "eval", seed=a.seed,
                         overwrite=True, progress=False)
    leak = res.get("leakage")
    if not isinstance(leak, dict) or leak.get("n_overlap") != 0:
        raise SystemExit(f"fold {k}: the leakage guard did not report n_overlap 0 ({leak!r}); study stopped")
    rows = res["dose_response"]["rows"]
    print(f"[fold {k}] balanced accuracy per ratio: "
          + ", ".join(f"{r['ratio']:g}: {100 * r['balanced_accuracy']:.1f}" for r in rows) + f", load {load()}",
          flush=True)
    result = {"fold": k, "gan": gan, "n_train_real": len(train),
              "n_test": (res["sources"].get("test") or {}).get("n"),
              "leakage": {x: leak.get(x) for x in ("n_overlap", "n_checked", "beyond_real_train")},
              "balanced_accuracy": {f"{r['ratio']:g}": r["balanced_accuracy"] for r in rows},
              "per_class_accuracy": {f"{r['ratio']:g}": r["per_class_accuracy"] for r in rows},
              "steps": res["dose_response"].get("steps"), "load_end": load(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "cpu_min": round((cpu_s() - c0) / 60, 2), "commit": a.commit}
    save_fold(fdir, a, result, k, sha, a.ledger)
    return result


def pm(d: dict) -> str:
    if d["half"] is None:
        return f"{100 * d['mean']:.1f}"
    return f"{100 * d['mean']:.1f} ± {100 * d['half']:.1f}"


def append_row(table: Path, r: dict) -> None:
    agg = r["aggregate"]
    acc = "; ".join(f"{k}: {pm(v)}" for k, v in agg["balanced_accuracy"].items())
    diff = "; ".join(f"{k}: {'+' if v['mean'] >= 0 else ''}{pm(v)}" + (" ✓" if v["beats_real_only"] else "")
                     for k, v in agg["paired_vs_0"].items()) or "–"
    clock = " CPU" if r.get("budget_clock") == "cpu" else ""
    row = (f"| {r['date']} | {r['method']} | {r['minutes']:g}{clock} | {','.join(map(str, r['folds_run']))} | {r['n']} | "
           f"{r['epochs']} | {r['cpu_min']} | {r['load_start'][0]} → {r['load_end'][0]} | {acc} | {diff} | "
           f"{r['commit']} |")
    text = table.read_text(encoding="utf-8") if table.is_file() else "# Benchmark results\n"
    if TABLE_HEAD not in text:
        text = text.rstrip("\n") + (
            f"\n\n{TABLE_HEAD}\n\n"
            "Leak-free: pbc-dev split `make_split(per_class=30, folds=5, seed=0)`; per fold the GANs and the "
            "classifiers see the same 30 real cells per class, tested on the fold's test part (no overlap, checked). "
            "Dose: `evaluate --train-on real --dose` with `evaluate-scarce-cpu` (no validation slice, last weights, "
            "equal optimisation steps per ratio). Balanced accuracy % per synthetic:real ratio, mean ± 95 % Student-t half-width over the "
            "folds run; paired = per-fold (ratio r − ratio 0), ✓ when its interval lies above 0. CPU min = the "
            "whole study's process CPU time; load = 1-minute load average at start → end.\n\n"
            "| date | method | GAN min per fold | folds | synthetic per class | epochs | CPU min | load | "
            "balanced acc % per ratio | paired r − 0 (points) | commit |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = text.rstrip("\n").split("\n")
    head = lines.index(TABLE_HEAD)
    end = head + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    last = max(i for i in range(head, end) if lines[i].startswith("|"))
    lines.insert(last + 1, row)
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_quality import DATA, commit
    from wbcgen.data import load_cells
    from wbcgen.evaluate.dose import parse_doses
    from wbcgen.gan.config import DEFAULT, load_config
    from classifiers.runtime import pick_device
    from wbcgen.gan.train import train_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default=DEFAULT,
                    help=f"GAN config: train-gan's default ({DEFAULT}), fast64, fast, cond, proj, tiny or FILE")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock GAN budget per fold (all classes)")
    ap.add_argument("-n", type=int, default=120, help="synthetic cells per class")
    ap.add_argument("--epochs", type=int, default=16, help="classifier epochs (of the largest training set)")
    ap.add_argument("--dose", default="0,0.5,1,2,4")
    ap.add_argument("--recipe", default="evaluate-scarce-cpu",
                    help="classifier recipe (default: evaluate-small-cpu without a validation slice, see below)")
    ap.add_argument("--folds-to-run", default=None, help="comma list of folds (default: all 5)")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="runs/bench-dose")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpu-budget", action="store_true",
                    help="count --minutes in this process's CPU time instead of wall-clock time (a busy machine)")
    ap.add_argument("--reuse-gan", action="store_true", help="reuse each fold's trained generators (OUT/fold-k/gan.json)")
    ap.add_argument("--resume", action="store_true",
                    help="keep every fold already finished with the same settings (OUT/fold-k/fold.json): a study "
                         "can run over several sessions, e.g. --folds-to-run 0,1,2 then the full list with --resume")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ledger", default=str(LEDGER),
                    help="every finished fold is appended here too (committed), and --resume reads folds back from it "
                         "when OUT lacks them: a study can continue on a new machine (default: %(default)s)")
    ap.add_argument("--no-ledger", action="store_true", help="neither read nor append the ledger")
    ap.add_argument("--table", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-table", action="store_true", help="write results.json only")
    a = ap.parse_args()
    a.dose = parse_doses(a.dose)
    if 0 not in a.dose:
        raise SystemExit("--dose must include 0 (the real-only baseline the paired difference uses)")
    folds = list(range(a.folds)) if a.folds_to_run is None else [int(x) for x in a.folds_to_run.split(",")]
    if any(not 0 <= k < a.folds for k in folds):
        raise SystemExit(f"--folds-to-run must be within 0..{a.folds - 1}")
    torch.set_num_threads(a.threads)
    a.ledger = None if a.no_ledger else Path(a.ledger)
    a.precision = train_precision(load_config(a.method), pick_device(None))  # where train_gans trains them
    if a.cpu_budget:
        import wbcgen.gan.train as gan_train

        gan_train.budget_clock = time.process_time
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    r = {"method": a.method, "minutes": a.minutes, "n": a.n, "epochs": a.epochs, "dose": a.dose, "recipe": a.recipe,
         "per_class": a.per_class, "folds": a.folds, "folds_run": folds, "threads": a.threads,
         "budget_clock": "cpu" if a.cpu_budget else "wall",
         "date": time.strftime("%Y-%m-%d %H:%M"), "load_start": load(), "commit": commit()}
    a.commit = r["commit"]  # each fold's too (taken before any fold appends to the ledger, a tracked file)
    print(f"[dose] start, load {r['load_start']}", flush=True)
    t0, c0 = time.perf_counter(), cpu_s()
    cells = load_cells(a.data, progress=False)
    split_path = the_split(cells, out, a.per_class, a.folds, a.seed)
    r["per_fold"] = [run_fold(k, cells, split_path, a, out) for k in folds]
    r["aggregate"] = aggregate([f["balanced_accuracy"] for f in r["per_fold"]])
    # CPU minutes of the whole study: per fold, also for folds kept from an earlier --resume'd invocation
    r["wall_min"] = round((time.perf_counter() - t0) / 60, 2)
    r["cpu_min"] = round(sum(f.get("cpu_min", 0.0) for f in r["per_fold"]), 2)
    r["cpu_min_this_call"] = round((cpu_s() - c0) / 60, 2)
    r["load_end"] = load()
    (out / "results.json").write_text(json.dumps(r, indent=1))
    if not a.no_table:
        append_row(Path(a.table), r)
    print(json.dumps({k: r[k] for k in ("method", "minutes", "folds_run", "cpu_min", "load_start", "load_end")}))
    for k, v in r["aggregate"]["balanced_accuracy"].items():
        d = r["aggregate"]["paired_vs_0"].get(k)
        print(f"ratio {k}: balanced accuracy {pm(v)} %" + (f"; paired vs 0: {pm(d)} points" if d else ""))


if __name__ == "__main__":
    main()
