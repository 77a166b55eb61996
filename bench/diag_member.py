"""One class's GAN as ONE default ensemble member, with config variants (issue 12, session 17).

The default (fast64x2) trains each ensemble member ~400 steps of batch 64 in ~11.8 CPU minutes; the
basophil members of GAN seeds 2 / 3 end as smooth blobs the check-1 judge never calls basophils
(bench/RESULTS.md, session 16). This trains the class's GAN as one member would be trained (the
member's CPU-time share, 2 threads, the pbc-dev train part of bench_quality.py's split seed 0, a
step cap of 450 x 64 / batch) with each variant and seed, and judges each exported generator like
diag_audition.py: the train-part W-Net of bench_quality.py (cached) on -n cells, with its calls
per class. The budget is CPU time, so the load beside it moves only the wall time.

    python bench/diag_member.py b32:batch_size=32 --seeds 2,3          # -> runs/diag-member/result.json
    python bench/diag_member.py cls1:cls_weight=1 cls03:cls_weight=0.3 --seeds 2,3
    python bench/diag_member.py base: --seeds 2 --cls lymphocyte       # the default member itself
    python bench/diag_member.py x2: --config fast64x2 --cpu-minutes 23.6  # a whole ensemble in a class's share
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

import classifiers  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import generate, load_config, load_generator, train_gan  # noqa: E402
from wbcgen.gan import train as gan_train  # noqa: E402
from wbcgen.gan.runs import member_records  # noqa: E402


def variant(spec: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` → (NAME, overrides); values are parsed as JSON when they can be; a
    comma-separated value goes unquoted (``diffaug=translation,cutout``)."""
    name, _, body = spec.partition(":")
    kv, items = {}, []
    for part in filter(None, body.split(",")):  # a part without "=" continues a list value: diffaug=a,b
        if "=" in part or not items:
            items.append(part)
        else:
            items[-1] += "," + part
    for item in items:
        k, _, v = item.partition("=")
        try:
            kv[k] = json.loads(v)
        except ValueError:
            kv[k] = v
    return name, kv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="NAME:key=value,... (GanConfig keys over --config)")
    ap.add_argument("--seeds", default="2,3")
    ap.add_argument("--cls", default="basophil")
    ap.add_argument("--cpu-minutes", type=float, default=11.8, help="CPU minutes per run (a fast64x2 member's "
                    "share of session 16's 118-CPU-minute row)")
    ap.add_argument("--config", default="fast64")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/diag-member")
    ap.add_argument("--bench", default="runs/bench-quality")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gan_train.budget_clock = time.process_time
    out, bench = Path(a.out), Path(a.bench)
    k = CLASSES.index(a.cls)
    cells = apply_split(load_cells(ROOT.parent / "shared" / "data" / "pbc-dev", progress=False),
                        bench / "split.json", "train")
    judge = classifiers.load_run(bench / "real-wnet-e8" / "run")
    res_path = out / "result.json"
    res = json.loads(res_path.read_text()) if res_path.is_file() else {}
    for vname, kv in map(variant, a.variants):
        b = int(kv.get("batch_size", 64))
        every = 100 * 64 // b
        cfg = load_config(a.config).replace(**({"name": f"{a.config}-{vname}", "max_steps": 450 * 64 // b,
                                                "sample_every": every, "eval_every": every, "ckpt_every": every} | kv))
        for s in [int(x) for x in a.seeds.split(",")]:
            name = f"{a.cls}-{vname}-s{s}"
            t, c = time.time(), time.process_time()
            run = train_gan(cells, a.cls, config=cfg, out_root=out / name, seed=s, progress=False,
                            overwrite=True, run_name="r", minutes=a.cpu_minutes)
            wall, cpu = time.time() - t, time.process_time() - c
            recs = member_records(run)  # an ensemble config (--config fast64x2): its members' steps, summed / listed
            summ = {"steps": sum(m["steps"] for m in recs),
                    "exported_step": [m["exported_step"] for m in recs] if len(recs) > 1 else recs[0]["exported_step"]}
            x = generate(load_generator(run / "generator"), a.n, seed=0)
            calls = torch.bincount(judge.predict(x), minlength=len(CLASSES)).tolist()
            res[name] = {"variant": kv, "seed": s, "wall_min": round(wall / 60, 2), "cpu_min": round(cpu / 60, 2),
                         "steps": summ["steps"], "exported_step": summ["exported_step"],
                         "img_per_s": round(summ["steps"] * b / wall, 1),
                         "check1": round(100 * calls[k] / a.n, 1), "judge_calls": dict(zip(CLASSES, calls))}
            print(name, res[name], flush=True)
            out.mkdir(parents=True, exist_ok=True)
            res_path.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
