"""Sampling-time selection on trained generators (issue 12 diagnostic): does keeping the synthetic
cells that a classifier of the GANs' OWN training split recognises raise check 1 and TSTR?

For a bench_quality row's generators (default fast64-60min) and each class: draw ``--pool`` cells
(the bench's seeds: the first 1,000 are the row's own samples), score them with a small classifier
trained on the TRAIN part only (``train_feature_net``, 64 px, the learnt selection proxy), and compare
check 1 (the row's train-part W-Net judge) for: the first 1,000 (the row as measured), truncated z
(psi), and the 1,000 of the pool with the highest classifier probability of their own class.
With ``--tstr`` the filtered set also gets the bench's TSTR W-Net (5 epochs, seed 0).

    python bench/diag_filter.py --row fast64-60min --pool 3000 --tstr
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@torch.inference_mode()
def probs(net, images: torch.Tensor) -> torch.Tensor:
    from wbcgen.gan.projected import _fit

    out = []
    for i in range(0, len(images), 256):
        x = _fit(images[i:i + 256].float() / 127.5 - 1, net.input_size)
        out.append(net(x).float().softmax(1))
    return torch.cat(out)


@torch.inference_mode()
def truncated(g, n: int, seed: int, psi: float) -> torch.Tensor:
    """``generate``'s first ``n`` images with every latent scaled by ``psi`` (the truncation trick)."""
    from wbcgen.gan.sample import latents

    f = g.folded()
    z = latents(n, g.z_dim, seed) * psi
    return torch.cat([f(z[i:i + 250]).mul(255).round().clamp(0, 255).to(torch.uint8) for i in range(0, n, 250)])


def main() -> None:
    from bench_quality import DATA, classifier_report, real_wnet, recipe, the_split
    from wbcgen.data import CLASSES, load_cells
    from wbcgen.data.splits import apply_split
    from wbcgen.gan import find_runs, load_config
    from wbcgen.gan.projected import train_feature_net
    from wbcgen.gan.sample import class_seed, generate, load_generator
    from wbcgen.gan.trainer import labelled_images

    ap = argparse.ArgumentParser()
    ap.add_argument("--row", default="fast64-60min")
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tstr", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = ROOT / "runs" / "bench-quality"
    cells = load_cells(DATA, progress=False)
    split = the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    judge, _ = real_wnet(train, test, out / "real-wnet-e8", 8, 0)
    imgs, labels = labelled_images(train, list(CLASSES))
    net, info = train_feature_net(imgs, labels, load_config("fast64"), len(CLASSES), 0, torch.device("cpu"))
    net.eval()
    print(f"filter classifier (train part only): {info}", flush=True)
    runs = find_runs(out / a.row / "gan-runs")
    res, keep = {}, {}
    for k, c in enumerate(CLASSES):
        g = load_generator(runs[c], "cpu")
        pool = generate(g, a.pool, seed=class_seed(0, c))  # what `wbcgen sample` draws: its first n = the row's
        p = probs(net, pool)[:, k]
        top = pool[p.argsort(descending=True)[:a.n]]
        sets = {"first": pool[:a.n], f"psi{a.psi:g}": truncated(g, a.n, class_seed(0, c), a.psi), "filtered": top}
        keep[c] = top
        res[c] = {name: round(100 * float((judge.predict(x) == k).float().mean()), 1) for name, x in sets.items()}
        res[c]["filter_p_kept_min"] = round(float(p.sort(descending=True).values[a.n - 1]), 3)
        res[c]["proxy_acc_first"] = round(100 * float((probs(net, pool[:a.n]).argmax(1) == k).float().mean()), 1)
        print(f"{c}: check 1 {res[c]}", flush=True)
    if a.tstr:
        x = torch.cat([keep[c] for c in CLASSES])
        y = torch.cat([torch.full((a.n,), k) for k in range(len(CLASSES))])
        res["tstr_wnet_filtered"] = classifier_report("wnet", recipe("wnet-cpu", 5), x, y, test,
                                                      out / a.row / "diag-filter-tstr-wnet", 0)
        print(f"TSTR W-Net on the filtered set: {res['tstr_wnet_filtered']}", flush=True)
    (out / a.row / "diag-filter.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
