"""Would an audition pick the better GAN seeds? (issue 12, ``audition = p`` in wbcgen/gan/ensemble.py)

    python bench/diag_audition.py fast64x2-cap450-g2-cpu118        # a finished bench_quality.py row

For every member of a finished ensemble row: how often the row's train-part W-Net (the check-1
judge, cached by bench_quality.py) calls its step-S sample grid (64 cells of ``samples/
step_00S00.png``, S = --early) the member's class, beside the random-conv FD its log recorded
at S, against the same for ``-n`` cells of its exported generator. If the early score ranks the
two members of a class as the final one does, an audition at step S picks the seeds that end
better. Diagnostic only: the audition itself scores with the learnt proxy (a classifier of the
GAN's training split), never with the evaluation W-Net. Writes OUT/LABEL/audition_diag.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import classifiers  # noqa: E402
from wbcgen.data import CLASSES  # noqa: E402
from wbcgen.gan import find_runs, generate, load_generator  # noqa: E402
from wbcgen.gan.runs import read_evals  # noqa: E402


def grid_tiles(path: Path, tile: int = 128, pad: int = 2) -> torch.Tensor:
    """The cells of a ``save_grid`` PNG (nrow 8, padding 2) as uint8 N×3×tile×tile."""
    a = np.asarray(Image.open(path).convert("RGB"))
    n = (a.shape[0] - pad) // (tile + pad)
    tiles = [a[pad + i * (tile + pad):pad + i * (tile + pad) + tile, pad + j * (tile + pad):pad + j * (tile + pad) + tile]
             for i in range(n) for j in range(n)]
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("label")
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--real-wnet", default=None, help="default OUT/real-wnet-e8")
    ap.add_argument("--early", type=int, default=100)
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    pred = classifiers.load_run(Path(a.real_wnet or out / "real-wnet-e8") / "run")
    rows = []
    for cls, run in sorted(find_runs(out / a.label / "gan-runs").items(), key=lambda kv: CLASSES.index(kv[0])):
        k = CLASSES.index(cls)
        for m in sorted((run / "members" / "gan" / cls).iterdir()):
            early = grid_tiles(m / "samples" / f"step_{a.early:06d}.png")
            summ = json.loads((m / "summary.json").read_text())
            final = generate(load_generator(m), a.n, seed=0)
            fd = {r["step"]: r["eval"]["fd"] for r in read_evals(m)}
            rows.append({"cls": cls, "member": m.name, "seed": json.loads((m / "config.json").read_text())["seed"],
                         "early_step": a.early, "early_check1": float((pred.predict(early) == k).float().mean()),
                         "early_fd": fd.get(a.early), "steps": summ["steps"], "exported_step": summ["exported_step"],
                         "final_check1": float((pred.predict(final) == k).float().mean()),
                         "exported_fd": fd.get(summ["exported_step"])})
            print(json.dumps(rows[-1]), flush=True)
    agree = []
    for cls in CLASSES:
        pair = [r for r in rows if r["cls"] == cls]
        if len(pair) == 2 and pair[0]["final_check1"] != pair[1]["final_check1"]:
            better_final = max(pair, key=lambda r: r["final_check1"])["member"]
            agree.append({"cls": cls, "final_better": better_final,
                          "early_check1_picks": max(pair, key=lambda r: r["early_check1"])["member"],
                          "early_fd_picks": min(pair, key=lambda r: r["early_fd"] or float("inf"))["member"]})
    res = {"label": a.label, "members": rows, "pairs": agree}
    (out / a.label / "audition_diag.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(agree, indent=1))


if __name__ == "__main__":
    main()
