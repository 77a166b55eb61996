"""Ring diagnostic (issue 12, session 11): which setting makes fast64-narrow draw concentric rings
after ~1,200 steps? Trains basophil GANs on the pbc-dev train part (split seed 0) with narrow
variants to 400, 800 and 1,200 steps (resuming, so each stage continues the same run; the EMA G
of each stage is kept), then judges 500 samples of every stage with the train-part W-Net
(check 1: share called basophil) and with the Fréchet distance in that W-Net's penultimate
features to the train-part basophils (the candidate selection proxy: a classifier trained on the
GAN's own training split), and draws one grid: a row of 8 samples per variant and stage.
Needs runs/bench-quality/split.json and the cached train-part W-Net of bench/bench_quality.py.

    python bench/diag_rings.py base,r1 2     # variants, torch threads -> runs/diag-rings/<v>.json + grid
"""
import json, shutil, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
import classifiers, torchvision
from wbcgen.data import load_cells
from wbcgen.data.splits import apply_split
from wbcgen.gan import train_gan, load_config
from wbcgen.gan.sample import load_generator, generate
from wbcgen.gan import quality

NARROW = dict(g_widths=[64, 32, 16, 16], d_widths=[16, 32, 64, 128], export="final")
VARIANTS = {"base": {},                                  # fast64-narrow as benchmarked (rings by ~1,200)
            "r1": dict(r1_gamma=1.0),                    # 10x the R1 weight: a smoother D
            "notrans": dict(diffaug="color,cutout"),     # no translation augmentation
            "flat": dict(d_head="flatten"),              # D's head sees the layout, not a pooled average
            "ada": dict(ada_target=0.6),                 # augmentation only as much as D overfits
            "noise": dict(g_noise=2)}                    # per-pixel noise in G's last two blocks (32, 64 px)
STAGES = (400, 800, 1200)
OUT = Path("runs/diag-rings")
cells = apply_split(load_cells("../shared/data/pbc-dev", progress=False), "runs/bench-quality/split.json", "train")
judge = classifiers.load_run("runs/bench-quality/real-wnet-e8/run", tta=False)
real_f = judge.features(cells.of_class("basophil").images)
for v in sys.argv[1].split(","):
    cfg = load_config("fast64").replace(name=f"narrow-{v}", **NARROW, **VARIANTS[v])
    res, rows, t0 = {"variant": v, "changes": VARIANTS[v], "stages": {}}, [], time.time()
    for i, steps in enumerate(STAGES):
        run = train_gan(cells, "basophil", config=cfg, out_root=OUT / v, seed=0, progress=False, steps=steps,
                        run_name="r", overwrite=i == 0, resume=OUT / v / "gan" / "basophil" / "r" if i else False)
        keep = OUT / v / f"g{steps}"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(run / "generator", keep)
        x = generate(load_generator(keep), 500, seed=1)
        y = judge.predict(x)
        fd = quality.frechet_distance(*quality.stats(judge.features(x)), *quality.stats(real_f))
        res["stages"][steps] = {"check1_B": float((y == 2).float().mean()),
                                "judge_says": torch.bincount(y, minlength=5).tolist(), "wnet_fd": round(fd, 2),
                                "seconds": round(time.time() - t0), "load": list(__import__("os").getloadavg())}
        rows.append(x[:8])
        print(v, steps, res["stages"][steps], flush=True)
    (OUT / f"{v}.json").write_text(json.dumps(res, indent=1) + "\n")
    torchvision.utils.save_image(torch.cat(rows).float() / 255, OUT / f"grid_{v}.png", nrow=8, padding=2)
