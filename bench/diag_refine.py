"""A detail refiner learnt from real cells, applied to a synthetic set (issue 12, session 25).

Session 22 found that what the synthetic cells lack is per-cell realism, session 24 that they carry
150–2,000× too little fine detail (above a quarter of the 64-px sampling rate). Question: can a network that
learns, from REAL cells only, to put the fine detail back into a cell whose detail was removed, give the
generators' cells the granules and edges they lack — and does TSTR follow?

The refiner R is an image-to-image GAN (pix2pix, Isola et al. 2017) at the generators' 64-px size, trained on
the GANs' own training part (split seed 0; all five classes pooled: texture is shared knowledge; never a test
image): input = a 32-px crop of a real cell with its detail removed (2×2 area down to 32 px, bilinear back to 64), target =
the cell at 64 px; loss = hinge GAN on a conditional patch D (spectral norm) + ``--l1`` × L1. Output =
input + R's residual. At application a synthetic cell (128 px, G's 64 px + fixed bilinear upsample) is area-
averaged to 64 px, put through the same degradation (so R sees what it was trained on), refined, and
bilinearly upsampled back to 128 px like any fast64 cell.

Reported (one JSON line in bench/diag_refine.jsonl, runs under runs/diag-refine/NAME): the refiner's CPU
minutes and steps; check 1 (the bench's train-part W-Net) on the real TEST cells as they are, degraded and
refined (a sanity check of R) and on the synthetic set before / after; FD ÷ floor per class after; TSTR W-Net
(and WBCsNet with ``--wbcsnet``) over 3 classifier seeds on the refined set; a picture bench/grid_refine_NAME.png
(per class: 4 real test cells degraded → refined, then 4 synthetic cells before → after).

    python bench/diag_refine.py runs/bench-quality/fast64-layout-cpu60/synthetic --name layout60 --minutes 10
    python bench/diag_refine.py --probe 700 --factor 4     # per-class vs pooled refiners on real test cells
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from diag_swap import tstr  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan.refiner import DetailStage, Refiner, train_refiner  # noqa: E402


def stage(R: Refiner | None, factor: int) -> DetailStage:
    """The product's refiner stage around ``R`` (None: an untrained R, i.e. the degradation alone)."""
    st = DetailStage(factor)
    if R is not None:
        st.net.load_state_dict(R.state_dict())
    st.trained.fill_(1)
    return st.eval()


@torch.no_grad()
def refine(R: Refiner | None, images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 128-px cells -> refined uint8 128-px cells (64-px area average, degrade, R, bilinear up)."""
    st, out = stage(R, factor), torch.empty_like(images)
    for i in range(0, len(images), 256):
        out[i:i + 256] = st(images[i:i + 256].float() / 255).mul(255).round().clamp(0, 255).to(torch.uint8)
    return out


def degraded(images: torch.Tensor, factor: int) -> torch.Tensor:
    return refine(None, images, factor)


def recall(pred, images, labels) -> dict:
    y = pred.predict(images)
    return {c: round(100 * float((y[labels == k] == k).float().mean()), 1) for k, c in enumerate(CLASSES)}


def grid(test, t_deg, t_ref, syn_images, syn_labels, s_ref, path: Path, k: int = 4) -> None:
    from torchvision.utils import save_image
    g = torch.Generator().manual_seed(0)
    rows = []
    for j in range(len(CLASSES)):
        it = torch.nonzero(test.labels == j).flatten()
        it = it[torch.randperm(len(it), generator=g)[:k]]
        js = torch.nonzero(syn_labels == j).flatten()
        js = js[torch.randperm(len(js), generator=g)[:k]]
        rows.append(torch.cat([test.images[it], t_deg[it], t_ref[it], syn_images[js], s_ref[js]]))
    x = torch.cat(rows).float() / 255
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x, path, nrow=5 * k, padding=2, pad_value=1.0)


def probe(train, test, pred, steps: int, factor: int, seed: int) -> dict:
    """Which cells should a class's refiner learn from? R trained for ``steps`` on the train-part basophils
    only, lymphocytes only and all classes pooled; per R, check 1 (percent) of the real TEST cells of three
    classes degraded and then refined."""
    res = {"probe_steps": steps, "factor": factor, "date": time.strftime("%Y-%m-%d %H:%M"), "load_start": bq.load(),
           "commit": bq.commit()}
    k = {c: CLASSES.index(c) for c in ("basophil", "lymphocyte", "neutrophil")}

    def check(R, c):
        imgs = test.images[test.labels == k[c]]
        return round(100 * float((pred.predict(refine(R, imgs, factor)) == k[c]).float().mean()), 1)

    res["degraded"] = {c: check(None, c) for c in k}
    for name, keep in (("basophil_only", train.labels == k["basophil"]),
                       ("lymphocyte_only", train.labels == k["lymphocyte"]), ("pooled", train.labels >= 0)):
        c0 = time.process_time()
        R, info = train_refiner(train.images[keep], steps=steps, factor=factor, seed=seed)
        res[name] = {"n_images": info["n_images"], "cpu_s": round(time.process_time() - c0),
                     "refined": {c: check(R, c) for c in k}}
        print(f"[probe] {name} {res[name]}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("synthetic", nargs="?", help="a wbcgen sample folder (bench_quality's OUT/LABEL/synthetic)")
    ap.add_argument("--name", default=None, help="the line's name (required with a synthetic folder)")
    ap.add_argument("--probe", type=int, default=0, metavar="STEPS",
                    help="instead: per-class vs pooled refiners of STEPS steps on real test cells (bench/diag_refine.jsonl)")
    ap.add_argument("--minutes", type=float, default=10, help="CPU minutes of refiner training")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=32, help="training crop (px of the 64-px cells)")
    ap.add_argument("--factor", type=int, default=2, help="degradation: 2 (detail above 32 px removed) or 4 (16 px)")
    ap.add_argument("--l1", type=float, default=10.0)
    ap.add_argument("--per-class", action="store_true", help="one refiner per class on that class's cells (as train-gan)")
    ap.add_argument("--blur", type=float, default=0.0, help="train also on inputs blurred further, sigma ~ U(0, BLUR) px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--tstr-epochs", type=int, default=5)
    ap.add_argument("--wbcsnet", action="store_true")
    ap.add_argument("--no-tstr", action="store_true", help="check 1 and FD only")
    ap.add_argument("--bench", default="runs/bench-quality")
    a = ap.parse_args()
    torch.set_num_threads(2)
    bench = Path(a.bench)
    cells = load_cells(bq.DATA, progress=False)
    split = bq.the_split(cells, bench)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    if a.probe:
        pred, _ = bq.real_wnet(train, test, bench / "real-wnet-e8", 8, 0)
        res = probe(train, test, pred, a.probe, a.factor, a.seed) | {"load_end": bq.load()}
        with open(ROOT / "bench" / "diag_refine.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
        return
    if not (a.synthetic and a.name):
        ap.error("give a synthetic folder and --name (or --probe STEPS)")
    out = ROOT / "runs" / "diag-refine" / a.name
    out.mkdir(parents=True, exist_ok=True)
    syn = load_cells(a.synthetic, progress=False)
    res = {"synthetic": a.synthetic, "name": a.name, "date": time.strftime("%Y-%m-%d %H:%M"), "load_start": bq.load(),
           "commit": bq.commit(), "l1": a.l1, "batch": a.batch, "crop": a.crop, "factor": a.factor, "seed": a.seed}
    res |= {"per_class": a.per_class, "blur": a.blur}
    c0, log = time.process_time(), (lambda r: print(f"[{a.name}] {r}", flush=True))
    groups = [(train.labels == k, k) for k in range(len(CLASSES))] if a.per_class else [(train.labels >= 0, None)]
    t_deg = degraded(test.images, a.factor)
    t_ref, s_ref, steps = test.images.clone(), syn.images.clone(), []
    for n, (keep, k) in enumerate(groups):  # one R per class (--per-class, like train-gan) or one for all
        share = (c0 + 60 * a.minutes - time.process_time()) / (len(groups) - n)
        R, info = train_refiner(train.images[keep], steps=10 ** 9, factor=a.factor, seed=a.seed, batch=a.batch,
                                crop=a.crop, l1=a.l1, blur=a.blur, deadline=time.process_time() + share,
                                clock=time.process_time, log=log)
        steps.append(info["steps"])
        torch.save(R.state_dict(), out / f"refiner{'' if k is None else '-' + CLASSES[k]}.pt")
        ti = slice(None) if k is None else test.labels == k
        si = slice(None) if k is None else syn.labels == k
        t_ref[ti], s_ref[si] = refine(R, test.images[ti], a.factor), refine(R, syn.images[si], a.factor)
    res["refiner"] = {"steps": steps, "cpu_minutes": round((time.process_time() - c0) / 60, 2),
                      "params": sum(p.numel() for p in R.parameters())}
    pred, _ = bq.real_wnet(train, test, bench / "real-wnet-e8", 8, 0)
    res["check1_test"] = {"as_is": recall(pred, test.images, test.labels), "degraded": recall(pred, t_deg, test.labels),
                          "refined": recall(pred, t_ref, test.labels)}
    res["check1_syn"] = {"before": recall(pred, syn.images, syn.labels), "after": recall(pred, s_ref, syn.labels)}
    print(f"[{a.name}] check 1 test {res['check1_test']}\n[{a.name}] check 1 synthetic {res['check1_syn']}", flush=True)
    grid(test, t_deg, t_ref, syn.images, syn.labels, s_ref, ROOT / "bench" / f"grid_refine_{a.name}.png")
    refined = SimpleNamespace(images=s_ref, labels=syn.labels)
    res["fd_ratio"] = {c: v["fd_ratio"] for c, v in bq.distances(pred, test, refined, 0).items()}
    print(f"[{a.name}] FD ratio after {res['fd_ratio']}", flush=True)
    if not a.no_tstr:
        res |= tstr(s_ref, syn.labels, test, out, a.tstr_seeds, a.tstr_epochs, a.wbcsnet, a.name)
    res["load_end"] = bq.load()
    with open(ROOT / "bench" / "diag_refine.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
