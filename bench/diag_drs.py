"""Does the GANs' own discriminator pick better cells? (issue 12, session 38)

Discriminator-driven sample selection, judged on a finished row's generators (no generator is trained):
each member of each class's ensemble draws a pool of ``--pool`` × its share of the row's ``-n`` cells (the
row's own latents first: the pool is the row's cells plus more of the same distribution), its own
discriminator (``checkpoints/best.safetensors``: the step the member exported) scores every pool cell
unaugmented, and ``n_j`` cells are kept per member (the member's share of the row's first ``n`` latents, so
the members' proportions do not move):

- ``sir`` importance resampling: ``n_j`` drawn without replacement with weights exp(logit / T) (Gumbel
  top-k), T = ``--temperature``; for an optimal D, exp(logit) = p_real / p_G (Grover et al. 2019; Azadi et al.
  2019's rejection sampling keeps the same ratio), so T = 1 corrects G's density towards the real one and
  T > 1 corrects less (keeps more of the pool's spread);
- ``top`` the ``n_j`` highest logits (T → 0): the narrowest choice, for contrast.

The kept cells are judged as a row judges them (bench_quality.py's check 1, FD ÷ floor, TSTR W-Net and
WBCsNet at the row's classifier seeds against the real test part; the row's own numbers are the paired
baseline). Session 9 filtered with a five-class classifier (``diag_filter.py``: check 1 up, TSTR down); this
filter asks each class's own D, which only knows "real cell of this class" from "this generator's".

    python bench/diag_drs.py fast64x2-bf16-g2-cpu118 --mode sir --pool 4
    python bench/diag_drs.py fast64x2-bf16-g2-cpu118 --mode top --pool 4

One line per run in bench/diag_drs.jsonl; cells and classifiers under runs/diag-drs/<ROW>-<mode>-p<pool>[-t<T>]/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from classifiers.runtime import load_checkpoint  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.cellset import CellSet  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import find_runs, load_generator  # noqa: E402
from wbcgen.gan.models import Discriminator, member_index  # noqa: E402
from wbcgen.gan.runs import read_run_config  # noqa: E402
from wbcgen.gan.sample import class_seed, generate, latents  # noqa: E402


def member_discriminators(run: Path) -> list[Discriminator]:
    """Each member's D at the step its generator was exported from (eval mode, frozen)."""
    ds = []
    for m in read_run_config(run)["members"]:
        mdir = run / m
        ck = mdir / "checkpoints" / "best.safetensors"
        if not ck.is_file():
            ck = mdir / "checkpoints" / "latest.safetensors"
        state = load_checkpoint(ck)
        d = Discriminator(read_run_config(mdir)["gan"])
        d.load_state_dict(state["D"])
        ds.append(d.eval().requires_grad_(False))
    return ds


@torch.no_grad()
def logits(d: Discriminator, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """D's logit per uint8 image (in index order, so a minibatch-std group is 4 neighbouring pool cells)."""
    out = [d(images[i:i + batch].float() / 127.5 - 1).float().flatten() for i in range(0, len(images), batch)]
    return torch.cat(out)


def choose(score: torch.Tensor, k: int, mode: str, temperature: float, seed: int) -> torch.Tensor:
    """Indices of ``k`` pool cells: the top ``k`` scores, or k draws without replacement with weights
    exp(score / T) (Gumbel top-k), in pool order."""
    if mode == "top":
        keys = score
    else:
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(len(score), generator=g, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        keys = score.double() / temperature - torch.log(-torch.log(u))
    return torch.sort(torch.topk(keys, k).indices).values


def select_class(run: Path, cls: str, n: int, pool: int, mode: str, temperature: float, seed: int):
    """``n`` cells of one class chosen from a pool of ``pool`` × n, and per-member statistics."""
    g = load_generator(run)
    ds = member_discriminators(run)
    cseed = class_seed(seed, cls)
    imgs = generate(g, pool * n, seed=cseed)
    z = latents(pool * n, g.z_dim, cseed)
    who = member_index(z, len(ds))
    keep, stats = [], []
    for j, d in enumerate(ds):
        rows = torch.nonzero(who == j).flatten()
        k = int((who[:n] == j).sum())  # the member's share of the row's own n cells
        s = logits(d, imgs[rows])
        pick = choose(s, k, mode, temperature, cseed + j)
        row_own = rows < n
        stats.append({"member": j, "pool": len(rows), "kept": k, "logit_pool": round(float(s.mean()), 3),
                      "logit_row": round(float(s[row_own].mean()), 3), "logit_kept": round(float(s[pick].mean()), 3),
                      "kept_from_row": int(row_own[pick].sum())})
        keep.append(rows[pick])
    idx = torch.sort(torch.cat(keep)).values
    return imgs[idx], stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", help="a finished ensemble row under --out (its gan-runs/ and results.json)")
    ap.add_argument("--mode", choices=["sir", "top"], default="sir")
    ap.add_argument("--pool", type=int, default=4, help="pool size as a multiple of -n")
    ap.add_argument("--temperature", type=float, default=1.0, help="sir: weights exp(logit / T)")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.pool < 1 or a.temperature <= 0:
        raise SystemExit("--pool must be >= 1 and --temperature > 0")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    row = out / a.row
    if not (row / "gan-runs").is_dir() or not (row / "results.json").is_file():
        raise SystemExit(f"{a.row}: {row} has no gan-runs/ or results.json (run the row first)")
    base = json.loads((row / "results.json").read_text())
    label = f"{a.row}-{a.mode}-p{a.pool}" + (f"-t{a.temperature:g}" if a.mode == "sir" and a.temperature != 1 else "")
    where = ROOT / "runs" / "diag-drs" / label
    t0, load0, cpu0 = time.time(), os.getloadavg(), time.process_time()
    runs = find_runs(row / "gan-runs")
    images, labels, stats = [], [], {}
    for k, cls in enumerate(CLASSES):
        x, stats[cls] = select_class(runs[cls], cls, a.n, a.pool, a.mode, a.temperature, 0)
        images.append(x)
        labels.append(torch.full((len(x),), k, dtype=torch.long))
        print(cls, stats[cls], flush=True)
    syn = CellSet(torch.cat(images), torch.cat(labels))
    cells = load_cells(bq.DATA, progress=False)
    split = bq.the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    real_epochs = base.get("real_epochs", 8)
    j = bq.judge(syn, train, test, real_wnet_dir=out / f"real-wnet-e{real_epochs}", real_epochs=real_epochs,
                 tstr_epochs=base.get("tstr_epochs", 5), seeds=list(range(a.tstr_seeds)), runs=where,
                 picture_path=ROOT / "bench" / f"quality_drs_{label}.png", reuse=True)
    r = {"row": a.row, "mode": a.mode, "pool": a.pool, "temperature": a.temperature, "n_per_class": a.n,
         "members": stats} | {k: j[k] for k in ("check1", "fd", "tstr_wnet", "tstr_wbcsnet")}
    r |= {"base": {k: base.get(k) for k in ("tstr_wnet", "tstr_wbcsnet", "check1", "fd")},
          "minutes": round((time.time() - t0) / 60, 1), "cpu_minutes": round((time.process_time() - cpu0) / 60, 1),
          "load_average": [load0, os.getloadavg()], "commit": bq.commit(), "threads": a.threads}
    for col in ("tstr_wnet", "tstr_wbcsnet"):
        print(label, col, bq.tstr_cell(r[col]), "paired", bq.paired(r[col], base[col]), flush=True)
    print(label, "check 1", {c: round(100 * v, 1) for c, v in r["check1"].items()},
          "FD/floor", {c: v["fd_ratio"] for c, v in r["fd"].items()}, flush=True)
    with open(ROOT / "bench" / "diag_drs.jsonl", "a") as fh:
        fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
