"""Quality over CPU time of the default generator, leak-free (issue 12: "show the quality-over-CPU-time
curve of the default").

    python bench/bench_curve.py --classes basophil,neutrophil --steps 600 --every 50     # ~10 min per class

One member of the default ensemble (``fast64x2`` with ``members = 1``: a member with seed s trains bit
for bit like this run with seed s) per class, trained on the TRAIN part of bench_quality.py's split
(``OUT/split.json``, pbc-dev 80/20, seed 0) in segments of ``--every`` steps (a resume is
bit-identical, so this is one training). After each segment its EMA generator draws 1,000 cells,
judged as a bench_quality row judges them, in the W-Net that bench_quality trains on the train part
(``OUT/real-wnet-e8``; it never saw the test part): FD of the class's synthetic vs real TEST cells at
matched sizes ÷ the real-vs-real floor (``wbcgen.metrics.distance_report``, 10 half-splits), and
check 1 (the share of the synthetic cells that W-Net calls the class). The GAN never sees the test
part either. CPU minutes: this process's CPU time inside the training calls (bf16 where the CPU has
it, as the default). One JSON line per point in ``--json`` (default ``bench/curve_<config>.jsonl``),
with the load average; a picture ``bench/curve_<config>_<class>.png`` (the run's fixed-z grids, one
row per ``--every`` multiple of 100).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_quality --cpu-budget (README: session 29)

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bench_quality as bq  # noqa: E402
from classifiers.runtime import load_checkpoint  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import Generator, generate, load_config, train_gan  # noqa: E402


def point(pred, G, test_feats, k: int, n: int, seed: int) -> dict:
    """FD ÷ floor (matched sizes) and check 1 of ``n`` cells of ``G`` for class index ``k``."""
    fake = generate(G.eval(), n, seed=12345, device="cpu")
    d = bq.class_distance(test_feats, pred.features(fake).double(), seed + k)  # exactly a row's FD ÷ floor
    return {"fd_matched": bq._num(d["fd_matched"]), "fd_floor": bq._num(d["fd_floor"]), "fd_ratio": d["fd_ratio"],
            "check1": round(float((pred.predict(fake) == k).float().mean()), 4),
            **{k_: d[k_] for k_ in ("prdc_matched", "prdc_floor") if k_ in d}}


def member_config(cfg):
    """The config a curve trains: an ensemble's member (``members = 1``, named ``<name>-member``)."""
    return cfg.replace(members=1, audition=0, name=f"{cfg.name}-member") if cfg.members > 1 else cfg


def run_name(member_cfg, seed: int) -> str:
    """The run folder of a curve of ``member_cfg`` (see :func:`member_config`) with this GAN seed."""
    return f"curve-{member_cfg.name}-s{seed}"


def curve(cls: str, cfg, train, test, pred, a, out: Path) -> tuple[list[dict], Path]:
    """The points of one class's member, and its run folder."""
    k = CLASSES.index(cls)
    test_feats = pred.features(test.images[test.labels == k]).double()
    run, cpu, rows = None, 0.0, []
    for s in range(a.every, a.steps + 1, a.every):
        c0 = bq.cpu_s()
        run = train_gan(train, cls, config=cfg, out_root=out, steps=s, seed=a.seed, progress=False,
                        **({"resume": run} if run else {"run_name": run_name(cfg, a.seed), "overwrite": True}))
        cpu += bq.cpu_s() - c0
        ck = load_checkpoint(run / "checkpoints" / "latest.safetensors")
        G = Generator(cfg.to_dict())
        G.load_state_dict(ck["ema"] if ck.get("ema") else ck["G"])
        rec = {"config": cfg.name, "class": cls, "seed": a.seed, "step": s, "cpu_min": round(cpu / 60, 2)}
        rec |= point(pred, G, test_feats, k, a.n, a.seed) | {"load": bq.load(), "commit": bq.commit()}
        print(json.dumps(rec), flush=True)
        rows.append(rec)
    return rows, run


def picture(run: Path, path: Path, every: int = 100) -> None:
    """The run's fixed-z sample grids at every ``every`` steps, one above the other (first 8 columns)."""
    from PIL import Image, ImageDraw

    grids = sorted(run.glob("samples/step_*.png"))
    grids = [g for g in grids if int(g.stem.split("_")[1]) % every == 0]
    if not grids:
        return
    ims = [Image.open(g).convert("RGB") for g in grids]
    w, h = ims[0].width, ims[0].height // 8  # save_grid: 8 rows of 8 fixed-z samples; keep the first
    sheet = Image.new("RGB", (w + 90, h * len(ims)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (g, im) in enumerate(zip(grids, ims)):
        sheet.paste(im.crop((0, 0, w, h)), (90, i * h))
        draw.text((6, i * h + h // 2 - 6), f"step {int(g.stem.split('_')[1])}", fill="black")
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="fast64x2", help="a GAN config; an ensemble is measured as one member")
    ap.add_argument("--classes", default="basophil", help="comma-separated, or 'all'")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("-n", type=int, default=1000, help="synthetic cells per point (as a bench_quality row)")
    ap.add_argument("--seed", type=int, default=0, help="GAN seed (member m0 of a row with this GAN seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(bq.DATA))
    ap.add_argument("--out", default="runs/bench-quality", help="bench_quality's folder (split.json, real-wnet-e8)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-picture", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    cfg = member_config(cfg)
    out = Path(a.out)
    cells = load_cells(a.data, progress=False)
    split = bq.the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    pred, _ = bq.real_wnet(train, test, out / "real-wnet-e8", 8, 0)
    classes = CLASSES if a.classes == "all" else a.classes.split(",")
    path = Path(a.json or ROOT / "bench" / f"curve_{Path(a.config).stem}.jsonl")
    print(f"curve {cfg.name} {classes} to step {a.steps}, load {bq.load()}, {time.strftime('%Y-%m-%d %H:%M')}",
          flush=True)
    for cls in classes:
        rows, run = curve(cls, cfg, train, test, pred, a, out / "curve-runs")
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        if not a.no_picture:
            picture(run, ROOT / "bench" / f"curve_{Path(a.config).stem}_{cls}.png")


if __name__ == "__main__":
    main()
