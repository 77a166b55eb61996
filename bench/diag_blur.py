"""Basophil diagnostic (bench/RESULTS.md, session 7): does D's blur before the first stride-2 conv hide the granules?
Trains basophil GANs on the pbc-dev train part (split seed 0) with fast64 variants for 400 steps,
then judges 500 samples of each (and of fast64-60min's exported basophil, step 400) with the
train-part W-Net (check 1) and the 64-px learnt proxy. Needs the rows fast64-60min and the cached
train-part W-Net of bench/bench_quality.py under runs/bench-quality.

    python bench/diag_blur.py noblur 1        # variant(s), torch threads -> runs/diag-blur/result.json
    python bench/diag_blur.py lrg2 2          # session 9: lr_g 2e-4 instead of TTUR's 1e-4
    python bench/diag_blur.py narrow 2        # session 9: half-width networks for 5.8 min (= 400 default steps)
"""
import glob, json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
import classifiers
from wbcgen.data import load_cells, CLASSES
from wbcgen.data.splits import apply_split
from wbcgen.gan import train_gan, load_config
from wbcgen.gan.sample import load_generator, generate
from wbcgen.gan.projected import train_feature_net, embed
from wbcgen.gan.trainer import labelled_images
from wbcgen.gan import quality
cells = apply_split(load_cells("../shared/data/pbc-dev", progress=False), "runs/bench-quality/split.json", "train")
variants = {"noblur": dict(d_blur_first=False), "noblur-b128": dict(d_blur_first=False, batch_size=128),
            "lrg2": dict(lr_g=2e-4),  # session 9: is the blur an under-trained G (TTUR lr_g 1e-4)?
            # session 9: half-width G and D, more steps for the same time (trained for MINUTES, not 400 steps)
            "narrow": dict(g_widths=[64, 32, 16, 16], d_widths=[16, 32, 64, 128])}
MINUTES = {"narrow": 5.8}  # = the 348 s the default's 400 steps took at 2 threads on the idle machine
todo = sys.argv[1].split(",")
gens = {"fast64-step400": glob.glob("runs/bench-quality/fast64-60min/gan-runs/gan/basophil/*/generator")[0]}
for v in todo:
    cfg = load_config("fast64").replace(name=f"fast64-{v}", **variants[v])
    t = time.time()
    length = ({"minutes": MINUTES[v]} if v in MINUTES else {"steps": 400 if cfg.batch_size == 64 else 200})
    run = train_gan(cells, "basophil", config=cfg, out_root=f"runs/diag-blur/{v}", seed=0, progress=False,
                    overwrite=True, run_name="r", **length)
    print(v, "trained", round(time.time() - t), "s", flush=True)
    gens[v] = str(run / "generator")
judge = classifiers.load_run("runs/bench-quality/real-wnet-e8/run")
cfg = load_config("fast64")
present = list(CLASSES)
imgs, labels = labelled_images(cells, present)
net, _ = train_feature_net(imgs, labels, cfg, 5, 0, torch.device("cpu"))
rf, _ = embed(net, imgs[labels == 2])
out = {}
for name, g in gens.items():
    x = generate(load_generator(g), 500, seed=1)
    y = judge.predict(x)
    f, p = embed(net, x)
    out[name] = {"check1_B": float((y == 2).float().mean()), "judge_says": torch.bincount(y, minlength=5).tolist(),
                 "proxy_fd": round(quality.frechet_distance(*quality.stats(f), *quality.stats(rf)), 2),
                 "proxy_acc": float((p == 2).float().mean())}
    print(name, out[name], flush=True)
json.dump(out, open("runs/diag-blur/result.json", "w"), indent=1)
