"""Where a robustness row's source W-Net goes wrong on zheng2018, per source (issue 14, session 17).

For a finished ``bench_robust.py --budget full`` row: the zero-shot confusion matrix of each of
zheng2018's two sources (Dataset 1: Jiangxi Tecom 120-px crops; Dataset 2: CellaVision 300-px),
with the row's crop and normaliser as bench_robust applies them (one predict call per lab), and a
picture of the cells behind the largest off-diagonal cell of each source beside cells of the same
true class it gets right (crops as the row loads them, before normalisation).

    python bench/diag_zheng.py mkl-lab-scale      # -> bench/diag_zheng_<row>.png, confusion printed
    python bench/diag_zheng.py mkl-lab-scale --adapt   # with classify --adapt's per-lab correction -> ..._adapt.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_robust as br  # noqa: E402
from classifiers import load_run  # noqa: E402
from wbcgen.data import load_cells  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row")
    ap.add_argument("--out-root", default="runs/bench-robust")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-k", type=int, default=8, help="cells per picture row")
    ap.add_argument("--tag", default="", help="the row's --tag (its run folder ROW-TAG)")
    ap.add_argument("--adapt", action="store_true", help="test-time adaptation per source (classify --adapt)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = json.loads(br.result_path(a.row, "full").read_text())
    z = load_cells(br.DATA / "zheng2018", label_map=br.ZHENG_MAP, crop=res["crop"], size=128,
                   cache_dir=Path(a.out_root) / "cache", progress=False)
    name = a.row + (f"-{a.tag}" if a.tag else "")
    pred = load_run(Path(a.out_root) / "full" / name / "source", device="cpu", tta=res["budget"]["tta"],
                    adapt_stats=a.adapt)
    rows = []
    for source, g in br.sources(z).items():
        y = pred.predict(z.images[g])
        t = z.labels[g]
        cm = torch.zeros(len(z.classes), len(z.classes), dtype=torch.int64)
        cm.index_put_((t, y), torch.ones(len(t), dtype=torch.int64), accumulate=True)
        print(f"{source}: {len(g)} cells, accuracy {float((y == t).float().mean()):.3f}; rows = true, "
              f"columns = predicted {', '.join(c[:4] for c in z.classes)}")
        for c, r in zip(z.classes, cm.tolist()):
            print(f"  {c:<11} {r}")
        off = cm.clone().fill_diagonal_(0)
        ti, pi = divmod(int(off.argmax()), len(z.classes))
        print(f"  largest confusion: {off[ti, pi]} {z.classes[ti]} called {z.classes[pi]}")
        wrong = g[(t == ti) & (y == pi)][:a.k]
        right = g[(t == ti) & (y == ti)][:a.k]
        for part in (z.images[wrong], z.images[right]):  # one picture row each, padded white
            rows.append(torch.cat([part, torch.full((a.k - len(part), *part.shape[1:]), 255, dtype=part.dtype)]))
    out = ROOT / "bench" / f"diag_zheng_{name}{'_adapt' if a.adapt else ''}.png"
    save_image(torch.cat(rows).float() / 255, out, nrow=a.k)
    print("picture:", out, "(per source: the largest confusion's cells, then that class's cells it gets right)")


if __name__ == "__main__":
    main()
