"""A bench_quality row's generators built from finished curve members (issue 12, session 44).

On a CPU without bf16 a from-scratch row (``bench_quality.py --minutes 118 --cpu-budget``) stops its members
at ~200 steps instead of the default's 450-step cap, so it measures another operating point. The members
that ``bench_curve.py --steps 450 --seed s`` trains ARE the members of a row at the cap: a curve member with
seed s trains bit for bit like member m0 of an ensemble with GAN seed s, and an ensemble's member j has seed
GAN seed + j. This script copies those members (``OUT/curve-runs/gan/<class>/curve-<config>-member-s<seed>``)
into a row folder — for ``--members 2`` assembled into the config's ensemble exactly as ``train-gan`` does
(``wbcgen.gan.ensemble.assemble``), for ``--members 1`` the member run itself — and writes ``OUT/LABEL/gan.json``
(steps per member; ``cpu_min`` = the members' training CPU from the curve ledgers). Then evaluate it like any
row, TSTR included:

    python bench/row_from_members.py --config bench/configs/fast64x2-ed1.toml --members 1 --label ed1-m1-g0
    python bench/bench_quality.py --method bench/configs/fast64x2-ed1.toml --minutes 0 --label ed1-m1-g0 \\
        --reuse-gan --gan-seed 0 --threads 2 --no-table      # results.json (the table's budget columns do not apply)

Every member must have reached ``--steps`` (the cap) and its recorded config must equal the config's
member (``members = 1``, no audition) apart from the name, else it refuses.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_curve import member_config, run_name  # noqa: E402
from bench_quality import DATA, _steps, commit, load, the_split  # noqa: E402
from classifiers.runtime import atomic_write_json  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import load_config  # noqa: E402
from wbcgen.gan.ensemble import _meta, assemble, member_dir  # noqa: E402


def member_run(out: Path, cfg, cls: str, seed: int, steps: int) -> Path:
    """The finished curve member of ``cls`` with this seed, checked against the config's member."""
    run = out / "curve-runs" / "gan" / cls / run_name(member_config(cfg), seed)
    if not (run / "summary.json").is_file():
        raise SystemExit(f"{run} is missing or unfinished: python bench/bench_curve.py --config {cfg.name} "
                         f"--classes {cls} --seed {seed} --steps {steps}")
    done = json.loads((run / "summary.json").read_text())["steps"]
    if done != steps:
        raise SystemExit(f"{run} has {done} steps, not {steps}")
    want = cfg.replace(members=1, audition=0, refine_steps=0).to_dict()
    have = load_config(json.loads((run / "config.json").read_text())["gan"]).to_dict()  # older runs: defaults filled
    diff = sorted(k for k in set(want) | set(have) if k != "name" and want.get(k) != have.get(k))
    if diff:
        raise SystemExit(f"{run} was trained with another config (differs in {', '.join(diff)})")
    return run


def ledger_cpu(paths) -> dict[tuple, float]:
    """Training CPU minutes by (config, class, seed, step) from curve ledgers (a later line wins)."""
    cpu = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            r = json.loads(line)
            if "cpu_min" in r:  # a curve point (runs/probe also holds other ledgers)
                cpu[r.get("config"), r.get("class"), r.get("seed"), r.get("step")] = r["cpu_min"]
    return cpu


def build_row(src: dict[str, list[Path]], cfg, row_dir: Path, *, gan_seed: int, steps: int, train=None) -> dict[str, Path]:
    """Copy each class's members (``src``: class → member runs, seeds ``gan_seed``, ``gan_seed + 1``, …) into
    ``row_dir/gan-runs``: one member as itself, several assembled into the config's ensemble (``train``: the
    training cells, recorded in the ensemble's config.json as ``train-gan`` records them)."""
    runs = {}
    for cls, ms in src.items():
        if len(ms) == 1:
            runs[cls] = row_dir / "gan-runs" / "gan" / cls / ms[0].name
            shutil.copytree(ms[0], runs[cls])
            continue
        k = cfg.replace(members=len(ms), audition=0)
        run = row_dir / "gan-runs" / "gan" / cls / f"{k.name}-g{gan_seed}"
        for j, m in enumerate(ms):
            shutil.copytree(m, member_dir(run, cls, j))
        meta = _meta(train, cls, k, run, gan_seed, None) | {"steps": steps, "epochs": None, "minutes": None}
        atomic_write_json(run / "config.json", meta)
        assemble(run, k, cls, meta, train)
        runs[cls] = run
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the row's config (preset or TOML), e.g. fast64x2")
    ap.add_argument("--members", type=int, default=2, help="members per class (1: each class's seed-GAN_SEED member alone)")
    ap.add_argument("--gan-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=450, help="every member's steps (the default's cap)")
    ap.add_argument("--label", required=True, help="the row's name (OUT/LABEL must not hold generators yet)")
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--ledgers", default="bench/curve_probes_*.jsonl,runs/probe/*.jsonl",
                    help="comma-separated globs of curve ledgers (for the members' CPU minutes; a later file's line wins)")
    a = ap.parse_args()
    out, cfg = Path(a.out), load_config(a.config)
    row_dir = out / a.label
    if (row_dir / "gan.json").exists() or (row_dir / "gan-runs").exists():
        raise SystemExit(f"{row_dir} already holds generators; choose another --label")
    seeds = [a.gan_seed + j for j in range(a.members)]
    src = {c: [member_run(out, cfg, c, s, a.steps) for s in seeds] for c in CLASSES}  # all checked first
    ledgers = [p for g in a.ledgers.split(",") for p in sorted(ROOT.glob(g))]
    known, name = ledger_cpu(ledgers), member_config(cfg).name
    cpu = [known.get((name, c, s, a.steps)) for c in CLASSES for s in seeds]
    train = None
    if a.members > 1:  # an ensemble's config.json records its training data
        cells = load_cells(a.data, progress=False)
        train = apply_split(cells, the_split(cells, out), "train")
    runs = build_row(src, cfg, row_dir, gan_seed=a.gan_seed, steps=a.steps, train=train)
    gan = {"config": cfg.name, "conditional": False, "members": a.members, "steps": {c: _steps(r) for c, r in runs.items()},
           "cpu_min": round(sum(cpu), 2) if None not in cpu else None, "wall_min": None,
           "from_members": {c: [m.name for m in ms] for c, ms in src.items()}, "commit": commit(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "load": load()}
    (row_dir / "gan.json").write_text(json.dumps(gan))
    print(json.dumps(gan), flush=True)


if __name__ == "__main__":
    main()
