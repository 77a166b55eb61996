"""Snapshot ensembles of a finished row (issue 12, session 32): does pooling each member's checkpoints help?

Per class, every member of a bench_quality row contributes its EMA generator at its BEST step (what the row
exported) AND at its LAST step (``checkpoints/latest``), when those differ: a "self-ensemble" of GAN snapshots
(Wang et al. 2016), at no extra training. The bench_curve runs showed one member's cells change kind within 50
steps (basophil check 1 71 -> 42 % between steps 400 and 450), so two snapshots might cover more of the real
cells than one. Writes a row folder whose generators bench_quality judges with ``--gan-from``:

    python bench/diag_snapshots.py fast64x2-bf16-cpu118 --name snap-probe
    python bench/bench_quality.py --method fast64x2 --minutes 118 --cpu-budget --threads 2 \\
        --gan-from snap-probe --label snap-probe-judge --no-table

Each member's weight in the class is its number of distinct snapshots over the class's total (latent -> part by
the ensemble's hash, wbcgen.gan.models.member_index), so a member whose best step is its last counts once.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifiers.runtime import load_checkpoint  # noqa: E402
from wbcgen.gan.models import Generator  # noqa: E402


def snapshot_run(run: Path, cls: str, new: Path) -> list[int]:
    """``new``: a copy of the class's ensemble run whose generator/ holds every member's distinct snapshots."""
    new.mkdir(parents=True)
    for f in ("config.json", "summary.json", "train_images.csv"):
        shutil.copy(run / f, new / f)
    state, steps = {}, []
    for m in sorted((run / "members" / "gan" / cls).iterdir()):
        seen = set()
        for ck in ("best", "latest"):
            s = load_checkpoint(m / "checkpoints" / f"{ck}.safetensors")
            if int(s["step"]) in seen:
                continue
            seen.add(int(s["step"]))
            state |= {f"members.{len(steps)}.{k}": v for k, v in s["ema"].items()}
            steps.append(int(s["step"]))
    cfg = json.loads((run / "generator" / "config.json").read_text()) | {"members": len(steps), "steps": steps}
    g = Generator(cfg)
    g.load_state_dict(state, strict=True)
    g.eval().save_pretrained(new / "generator")
    shutil.copy(run / "generator" / "train_images.csv", new / "generator" / "train_images.csv")
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("row", help="a finished bench_quality row (its label) with an ensemble config")
    ap.add_argument("--name", default="snap-probe", help="the new row folder (its GANs only)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    a = ap.parse_args()
    src, dst = Path(a.out) / a.row, Path(a.out) / a.name
    if dst.exists():
        raise SystemExit(f"{dst} exists; choose another --name")
    (dst / "gan-runs" / "gan").mkdir(parents=True)
    shutil.copy(src / "gan.json", dst / "gan.json")
    for cdir in sorted((src / "gan-runs" / "gan").iterdir()):
        run = next(cdir.iterdir())
        print(cdir.name, snapshot_run(run, cdir.name, dst / "gan-runs" / "gan" / cdir.name / run.name))


if __name__ == "__main__":
    main()
