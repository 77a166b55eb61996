"""GAN benchmarks (issue 4): training images/s, sampling speed, multiply-accumulates.

    python bench/bench_gan.py speed   [--threads 1,2] [--data ../shared/data/pbc-dev]
    python bench/bench_gan.py sample  [--threads 1,2] [--from RUN]
    python bench/bench_gan.py macs

``speed`` compares the fast config's training loop with a plain batch-1 loop of the
paper's architecture (the way the paper trained: one image, separate D passes on real
and fake, Adam lr 1e-5 β1 0.9) on the same images and machine. ``sample`` times 1,000
images of one class (generation and PNG writing separately). Quality over CPU time is
``bench/bench_curve.py`` (leak-free: the GAN trains on a split's train part, the W-Net that
judges it never saw the test cells it compares).
Machine load (``os.getloadavg``) is printed beside every number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wbcgen.data import load_cells  # noqa: E402
from wbcgen.gan import create_gan, load_config  # noqa: E402
from wbcgen.gan import ddp  # noqa: E402
from wbcgen.gan.train import Trainer, class_images  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pbc-dev"


def load() -> str:
    return "load avg " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def class_cells(data: Path, cls: str):
    """Load only one class folder of a class-folder data set (copied aside; the data layer
    does not follow symlinks)."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="bench-gan-"))
    shutil.copytree(data / cls, tmp / cls)
    try:
        return load_cells(tmp, progress=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def basophils(data: Path) -> torch.Tensor:
    return class_images(class_cells(data, "basophil"), "basophil")


def fast_loop_img_s(real: torch.Tensor, steps: int, config: str = "fast") -> float:
    tr = Trainer(load_config(config), real, 0, ddp.Dist())
    tr.train_step()  # warm-up (oneDNN primitive creation)
    t = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    return steps * tr.cfg.batch_size / (time.perf_counter() - t)


def paper_batch1_img_s(real: torch.Tensor, steps: int) -> float:
    """A plain DCGAN loop, batch 1, the paper's networks and optimiser settings."""
    torch.manual_seed(0)
    G, D = create_gan("paper")
    og = torch.optim.Adam(G.parameters(), lr=1e-5, betas=(0.9, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=1e-5, betas=(0.9, 0.999))
    G.train(), D.train()
    one, zero = torch.ones(1, 1), torch.zeros(1, 1)

    def step(i: int) -> None:
        x = real[i % len(real)][None].float() / 127.5 - 1
        fake = G(torch.randn(1, 100)) * 2 - 1
        od.zero_grad()
        (F.binary_cross_entropy_with_logits(D(x), one) + F.binary_cross_entropy_with_logits(D(fake.detach()), zero)).backward()
        od.step()
        og.zero_grad()
        F.binary_cross_entropy_with_logits(D(fake), one).backward()
        og.step()

    step(0)
    t = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    return steps / (time.perf_counter() - t)


def macs_per_image(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of conv/linear layers for one input (forward hooks)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.ConvTranspose2d):
            total[0] += inp[0][0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Conv2d):  # includes UpConv2d, counted in its transposed form
            k = 4 if type(m).__name__ == "UpConv2d" else m.kernel_size[0] * m.kernel_size[1]  # 2x2 taps/output
            total[0] += out[0].numel() * m.in_channels * k // m.groups
        elif isinstance(m, torch.nn.Linear):
            total[0] += m.in_features * m.out_features
    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    return total[0]


def cmd_macs(args) -> dict:
    out = {}
    for name in ("paper", "fast", "tiny"):
        G, D = create_gan(name)
        out[name] = {"G_MMAC": round(macs_per_image(G, torch.randn(1, G.z_dim)) / 1e6, 1),
                     "D_MMAC": round(macs_per_image(D, torch.zeros(1, 3, 128, 128)) / 1e6, 1),
                     "G_params": sum(p.numel() for p in G.parameters()),
                     "D_params": sum(p.numel() for p in D.parameters())}
    print(json.dumps(out, indent=1))
    return out


def cmd_speed(args) -> dict:
    real = basophils(Path(args.data))
    out = {}
    for nt in args.threads:
        torch.set_num_threads(nt)
        fast = fast_loop_img_s(real, args.steps)
        l1 = load()
        paper = paper_batch1_img_s(real, args.paper_steps)
        out[f"threads={nt}"] = {"fast_img_s": round(fast, 2), "paper_batch1_img_s": round(paper, 3),
                                "speedup": round(fast / paper, 1), "load_fast": l1, "load_paper": load()}
        print(json.dumps({nt: out[f"threads={nt}"]}), flush=True)
    return out


def cmd_sample(args) -> dict:
    from wbcgen.gan import generate, load_generator
    from wbcgen.gan.sample import write_pngs

    if args.source:
        G = load_generator(args.source, "cpu")
    else:
        torch.manual_seed(0)
        G = create_gan("fast")[0].eval()
    out = {}
    for nt in args.threads:
        torch.set_num_threads(nt)
        gen, cpu, wr = [], [], []
        for rep in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            imgs = generate(G, 1000, seed=rep, batch_size=args.batch_size, device="cpu")
            gen.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                write_pngs(imgs, Path(d), [f"{i:06d}.png" for i in range(1000)], workers=max(2, nt))
                wr.append(time.perf_counter() - t)
        out[f"threads={nt}"] = {"generate_1000_s": {"min": round(min(gen), 2), "median": round(statistics.median(gen), 2)},
                                "generate_1000_cpu_s": round(min(cpu), 2),
                                "write_png_1000_s": {"min": round(min(wr), 2), "median": round(statistics.median(wr), 2)},
                                "load": load()}
        print(json.dumps({nt: out[f"threads={nt}"]}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "sample", "macs"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", default="1,2", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--paper-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--from", dest="source", default=None)
    ap.add_argument("--json", default=None, help="Also write the result here.")
    args = ap.parse_args()
    res = {"speed": cmd_speed, "sample": cmd_sample, "macs": cmd_macs}[args.what](args)
    res["torch"] = torch.__version__
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
