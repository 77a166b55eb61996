"""The GAN trainer's CUDA paths on real cells (issue 12): bf16 autocast, fp32, bf16 + torch.compile.

For each variant, the default's network (fast64) trains one class for --steps steps on CUDA
(channels_last on every path), then: every logged loss finite, the run's generator loads with
``from_pretrained(strict=True)`` (load_generator), sampling twice with one seed gives the same
images on CUDA, and the CUDA and CPU samples of those weights differ by at most a few levels.
Throughput (images/s, the mean over the last half of the logged rows) and wall time (compile
included) go to a JSON file. Needs a CUDA device; the CPU rows of bench/RESULTS.md do not.

    python bench/cuda_check.py --data ../shared/data/pbc-dev --out runs/cuda_check.json
    python bench/cuda_check.py --data ../shared/data/pbc-dev --out runs/cuda_profile.json --profile 30
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wbcgen.data import load_cells  # noqa: E402
from wbcgen.gan import generate, load_config, load_generator, train_gan  # noqa: E402

VARIANTS = {"bf16": dict(amp=True), "fp32": dict(amp=False), "bf16+compile": dict(amp=True, compile=True)}


def check(cells, cls: str, name: str, steps: int, root: Path, config: str, device: str = "cuda") -> dict:
    cfg = load_config(config).replace(steps=steps, eval_every=steps, sample_every=steps, ckpt_every=steps,
                                      log_every=5, **VARIANTS[name])
    t0 = time.perf_counter()
    run = train_gan(cells, cls, config=cfg, out_root=root / name.replace("+", "-"), steps=steps, device=device,
                    progress=False, seed=0)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss_d" in r]
    finite = all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in train_rows)
    late = train_rows[len(train_rows) // 2:]
    g_cuda, g_cpu = load_generator(run, device=device), load_generator(run, device="cpu")
    a, b = generate(g_cuda, 64, seed=0, device=device), generate(g_cuda, 64, seed=0, device=device)
    c = generate(g_cpu, 64, seed=0, device="cpu")
    diff = (a.float() - c.float()).abs()
    return {"steps": steps, "wall_s": round(wall, 1),
            "img_per_s": round(sum(r["img_per_s"] for r in late) / len(late), 1),
            "losses_finite": finite, "last": {k: train_rows[-1][k] for k in ("loss_d", "loss_g", "d_real", "d_fake")},
            "cuda_sampling_repeatable": bool(torch.equal(a, b)),
            "cuda_vs_cpu_abs_diff": {"mean": round(float(diff.mean()), 3), "max": int(diff.max())},
            "ok": finite and bool(torch.equal(a, b)) and float(diff.mean()) < 2.0}


def profile(cells, cls: str, config: str, name: str, steps: int, device: str) -> tuple[dict, str]:
    """Seconds per training step (after 10 warm-up steps, which include any compilation) and a
    torch.profiler table of 10 more steps: where a step's time goes."""
    from wbcgen.gan import ddp
    from wbcgen.gan.trainer import Trainer, class_images

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tr = Trainer(load_config(config).replace(**VARIANTS[name]), class_images(cells, cls), 0, ddp.setup(device))
    t0 = time.perf_counter()
    for _ in range(10):
        tr.train_step()
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    sync()
    per = (time.perf_counter() - t0) / steps
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(10):
            tr.train_step()
        sync()
    ev = prof.key_averages()
    launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    gpu_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in ev)
    rep = {"warmup_10_steps_s": round(warm, 2), "s_per_step": round(per, 4),
           "img_per_s": round(tr.cfg.batch_size / per, 1), "kernel_launches_per_step": launches / 10,
           "gpu_busy_ms_per_step": round(gpu_us / 10 / 1000, 2)}
    table = ev.table(sort_by="self_cpu_time_total", row_limit=30)
    return rep, f"== {config} {name}: {json.dumps(rep)}\n{table}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="the JSON report")
    ap.add_argument("--cls", default="basophil")
    ap.add_argument("--config", default="fast64")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script (compile is CUDA-only)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="instead: time STEPS training steps per variant and profile 10 (tables to --out .txt)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check runs on a GPU machine")
    cells = load_cells(a.data, progress=False)
    rep = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "torch": torch.__version__,
           "config": a.config, "cls": a.cls, "variants": {}}
    texts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.variants.split(","):
            try:
                if a.profile:
                    rep["variants"][name], text = profile(cells, a.cls, a.config, name, a.profile, a.device)
                    texts.append(text)
                else:
                    rep["variants"][name] = check(cells, a.cls, name, a.steps, Path(tmp), a.config, a.device)
            except Exception as e:  # noqa: BLE001 — a failing path is the finding; go on with the others
                rep["variants"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
            print(name, json.dumps(rep["variants"][name]), flush=True)
            Path(a.out).write_text(json.dumps(rep, indent=1))
            if a.profile:
                Path(a.out).with_suffix(".txt").write_text("".join(texts))
    if a.profile:
        return
    sys.exit(0 if all(v.get("ok") for v in rep["variants"].values()) else 1)


if __name__ == "__main__":
    main()
