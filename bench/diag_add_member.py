"""Add members to a finished ensemble row: the paired test of "one more generator per class" (issue 12, session 34).

A from-scratch row of a 3-member ensemble costs ~75 minutes and its TSTR moves by several points between GAN
seed pairs. This is the paired, cheaper comparison: a copy of the row's ensemble runs (members m0 … m{k-1}
untouched, bit for bit) is resumed under ``--config`` (the row's config with more ``members``), which trains
only the new members — seeds ``gan_seed + k`` … with ``--member-minutes`` CPU minutes each (the budget is CPU
time, so the load beside it moves only the wall time), on the train part of bench_quality's split — and
assembles the larger ensembles. It writes ``OUT/LABEL/gan.json`` (steps per member; ``cpu_min`` = the row's
GAN CPU minutes + the new members'), then evaluates like any row:

    python bench/diag_add_member.py fast64x2-bf16-g2-cpu118 --config bench/configs/fast64x3.toml \\
        --label fast64x3-paired-g2
    python bench/bench_quality.py --method bench/configs/fast64x3.toml --minutes 118 --cpu-budget \\
        --threads 2 --gan-seed 2 --label fast64x3-paired-g2 --reuse-gan

With the row's members at their step cap (the default's 450 on a CPU with bf16), the copied members are the
ones a from-scratch run of the larger ensemble would train when its share per member is enough for the cap;
otherwise it would stop them earlier and this probe spends more CPU than the row's budget — gan.json says how
much (``cpu_min``; ``cpu_min_added``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as bench_quality --cpu-budget

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_quality import DATA, _steps, commit, cpu_s, load, the_split  # noqa: E402
from classifiers.runtime import atomic_write_json  # noqa: E402
from wbcgen.data import load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import find_runs, load_config  # noqa: E402
from wbcgen.gan import train as gan_train  # noqa: E402
from wbcgen.gan.ensemble import is_ensemble, member_dir, train_ensemble  # noqa: E402
from wbcgen.gan.runs import read_run_config  # noqa: E402

ASSEMBLED = ("generator", "summary.json", "samples/ensemble.png")  # what assemble() writes into an ensemble run


def copy_unassembled(src: Path, dst: Path, cfg) -> None:
    """``src`` ensemble run → ``dst`` without its assembled generator, its config saying ``cfg``."""
    shutil.copytree(src, dst)
    for name in ASSEMBLED:
        p = dst / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    meta = read_run_config(dst)
    meta["gan"] = cfg.to_dict()
    meta["members"] = [str(member_dir(dst, meta["cls"], j).relative_to(dst)) for j in range(cfg.members)]
    meta["member_seeds"] = [int(meta["seed"]) + j for j in range(cfg.members)]
    atomic_write_json(dst / "config.json", meta)  # as the trainer writes it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", help="a finished bench_quality row of an ensemble config (OUT/ROW/gan.json)")
    ap.add_argument("--config", required=True, help="the row's config with more members (TOML/JSON or preset)")
    ap.add_argument("--label", required=True, help="the new row's name (OUT/LABEL must not hold a gan.json yet)")
    ap.add_argument("--member-minutes", type=float, default=118 / 15,
                    help="CPU minutes of each new member (default 118 / 15: a 3-member ensemble's share of the "
                         "benchmark's 118 CPU minutes)")
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gan_train.budget_clock = time.process_time
    out = Path(a.out)
    src_row, row_dir = out / a.row, out / a.label
    if not (src_row / "gan.json").is_file():
        raise SystemExit(f"{src_row / 'gan.json'} does not exist: run that row first")
    if (row_dir / "gan.json").exists() or (row_dir / "gan-runs").exists():
        raise SystemExit(f"{row_dir} already holds generators; choose another --label")
    cfg = load_config(a.config)
    src = find_runs(src_row / "gan-runs")
    if not src or not all(is_ensemble(p) for p in src.values()):
        raise SystemExit(f"{a.row}: its generators are not ensemble runs")
    k = {c: len(_steps(p)) for c, p in src.items()}  # members per class
    if any(cfg.members <= n for n in k.values()):
        raise SystemExit(f"--config has {cfg.members} members; the row's ensembles already have {sorted(set(k.values()))}")
    cells = load_cells(a.data, progress=False)
    train = apply_split(cells, the_split(cells, out), "train")
    base = json.loads((src_row / "gan.json").read_text())
    t0, c0 = time.perf_counter(), cpu_s()
    print(f"[{a.label}] from {a.row}: {k} members per class -> {cfg.members}, load {load()}", flush=True)
    runs = {}
    for cls, p in src.items():
        dst = row_dir / "gan-runs" / p.relative_to(src_row / "gan-runs")
        copy_unassembled(p, dst, cfg)
        new = cfg.members - k[cls]
        runs[cls] = train_ensemble(train, cls, resume=dst, minutes=new * a.member_minutes, progress=False)
        print(f"[{a.label}] {cls}: members {_steps(runs[cls])} steps, "
              f"{(cpu_s() - c0) / 60:.1f} CPU min so far, load {load()}", flush=True)
    added_cpu, added_wall = (cpu_s() - c0) / 60, (time.perf_counter() - t0) / 60
    gan = {"config": cfg.name, "conditional": False, "steps": {c: _steps(r) for c, r in runs.items()},
           "wall_min": round(base["wall_min"] + added_wall, 2), "cpu_min": round(base["cpu_min"] + added_cpu, 2),
           "paired_from": a.row, "cpu_min_added": round(added_cpu, 2), "wall_min_added": round(added_wall, 2),
           "member_minutes": a.member_minutes, "commit": commit(), "load_end": load()}
    (row_dir / "gan.json").write_text(json.dumps(gan))
    print(json.dumps(gan), flush=True)


if __name__ == "__main__":
    main()
