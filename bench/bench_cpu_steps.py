"""GAN steps per CPU second on this machine: fp32 against ``cpu_bf16``, and OpenMP's spinning
against passive waiting, alone and beside one busy process (session 29, bench/RESULTS.md).

    python bench/bench_cpu_steps.py [--config fast64x2] [--cls basophil] [--steps 40] [--threads 2]

Each case runs in a fresh process (OMP_WAIT_POLICY is read once, when torch loads OpenMP):
the config's Trainer on the class's pbc-dev images, ``--warmup`` steps, then ``--steps`` timed
steps; prints steps per CPU second (what a ``--cpu-budget`` row buys), wall seconds per step
and the load average. "busy" = a pure-Python loop in another process for the case's length.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pbc-dev"
CASES = [("fp32", "spin", False), ("bf16", "spin", False), ("fp32", "passive", False),
         ("fp32", "spin", True), ("fp32", "passive", True), ("bf16", "passive", True)]


def one(a) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from wbcgen.data import load_cells
    from wbcgen.gan.config import load_config
    from wbcgen.gan.ddp import Dist
    from wbcgen.gan.train import train_precision
    from wbcgen.gan.trainer import Trainer, class_images

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config).replace(cpu_bf16=a.precision == "bf16")
    t = Trainer(cfg, class_images(load_cells(a.data, progress=False), a.cls), 0, Dist())
    for _ in range(a.warmup):
        t.train_step()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(a.steps):
        t.train_step()
    c, w = time.process_time() - c0, time.perf_counter() - w0
    print(json.dumps({"precision": train_precision(cfg, torch.device("cpu")), "steps_per_cpu_s": round(a.steps / c, 3),
                      "wall_s_per_step": round(w / a.steps, 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fast64x2")
    ap.add_argument("--cls", default="basophil")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default=None, help=argparse.SUPPRESS)  # set in the child process
    a = ap.parse_args()
    if a.precision:
        return one(a)
    print(f"{'precision':9} {'OpenMP wait':11} {'beside':6} {'steps/CPU s':>11} {'wall s/step':>11}  load")
    for prec, wait, busy in CASES:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        env = os.environ | {"OMP_WAIT_POLICY": wait.upper()}
        try:
            out = subprocess.run([sys.executable, __file__, "--precision", prec, "--config", a.config, "--cls", a.cls,
                                  "--data", a.data, "--steps", str(a.steps), "--warmup", str(a.warmup),
                                  "--threads", str(a.threads)], env=env, capture_output=True, text=True, check=True)
        finally:
            if hog is not None:
                hog.kill()
        r = json.loads(out.stdout.strip().splitlines()[-1])
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{r['precision']:9} {wait:11} {'busy' if busy else 'alone':6} {r['steps_per_cpu_s']:11.3f} "
              f"{r['wall_s_per_step']:11.3f}  {load}", flush=True)


if __name__ == "__main__":
    main()
