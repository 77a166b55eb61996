"""The paper's checks on a synthetic set, plus FID/KID and the domain Fréchet distance.

All feature-space checks use a *reference* W-Net trained on real images. Unless the user
gives one (``--classifier RUN_DIR``), it is trained here on a stratified half of the real
set; the other half — images that network has never seen — is what synthetic images are
compared with in feature space (features of training images are tighter than those of
unseen images, which would make any synthetic set look worse than it is).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

import classifiers
from classifiers.metrics import classification_report
from classifiers.runtime import UserError
from classifiers.splits import stratified_holdout
from wbcgen import metrics
from wbcgen.evaluate import paper
from wbcgen.metrics.prdc import NEAREST_K

CHECKS = ("classify-synthetic", "tstr", "cosine", "fid", "review")
ALIASES = {"1": "classify-synthetic", "2": "tstr", "3": "cosine", "4": "review", "table5": "classify-synthetic",
           "table6": "tstr", "table7": "cosine", "table8": "review", "kid": "fid", "distances": "fid"}


def parse_checks(spec) -> list[str]:
    """``"all"``, a comma list or an iterable of names/numbers → ordered check names."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in str(s).split(",")]
    items = [i.strip().lower() for i in items if i.strip()]
    if "all" in items:
        return list(CHECKS)
    out = []
    for i in items:
        name = ALIASES.get(i, i)
        if name not in CHECKS:
            raise UserError(f"unknown check {i!r}; choose from {', '.join(CHECKS)}, 1-4 or all")
        if name not in out:
            out.append(name)
    return [c for c in CHECKS if c in out]


def reference_classifier(real, *, out_dir: Path, recipe: dict, seed: int, classifier=None, progress=True,
                         device=None, resume: bool = False, compare=None):
    """``(predictor, info, held_idx)``: the real-trained W-Net and the real images it never saw.

    With ``compare`` (a split's test part) the W-Net trains on all of ``real`` and
    ``held_idx`` indexes ``compare``: synthetic images are then compared with real images
    that neither the GANs nor this network trained on."""
    if classifier is not None:
        pred = classifiers.load_run(classifier, device=device)
        if tuple(pred.classes) != tuple(real.classes):
            raise UserError(f"classifier {classifier} was trained on classes {list(pred.classes)}, "
                            f"not {list(real.classes)}")
        info = {"run": Path(classifier).name, "model": pred.config.get("model"), "trained_here": False,
                "note": "user-supplied classifier: it may have seen some of these real images"}
        return pred, info, torch.arange(len(real if compare is None else compare))
    from classifiers.train import fit

    if compare is not None:
        keep, held = torch.arange(len(real)), torch.arange(len(compare))
        test_im, test_lb = compare.images, compare.labels
    else:
        keep, held = stratified_holdout(real.labels, 0.5, seed)
        test_im, test_lb = real.images[held], real.labels[held]
    res = fit("wnet", real.images[keep], real.labels[keep], classes=real.classes, recipe=recipe,
              out_dir=out_dir, test=(test_im, test_lb), seed=seed, progress=progress,
              device=device, overwrite=not resume, resume=resume,
              data_info={"source": Path(real.source).name,
                         "subset": "split train part" if compare is not None else "stratified half"})
    from wbcgen.provenance import image_rows, write_train_images

    if real.manifest:  # reusable later as --classifier: the leakage guard reads this list
        write_train_images(out_dir, image_rows(real.subset(keep)))
    info = {"run": Path(out_dir).name, "model": "wnet", "trained_here": True, "n_train": int(len(keep)),
            "n_heldout": int(len(held)), "heldout_test": res.get("test"),
            "note": ("W-Net trained on the split's training images; feature-space checks compare the split's "
                     "test part (images neither the GANs nor this network saw) with the synthetic images")
            if compare is not None else
            "W-Net trained on a stratified half of the real set; feature-space checks compare the "
            "other half with the synthetic images"}
    return classifiers.load_run(out_dir, device=device), info, held


def classify_synthetic(pred, synthetic) -> dict:
    """Check 1 (Table 5): the real-trained classifier labels the synthetic images."""
    if len(synthetic) == 0:
        raise UserError("the synthetic set is empty")
    y = pred.predict(synthetic.images)
    rep = classification_report(synthetic.labels, y, synthetic.classes)
    present = {c: v for c, v in rep["per_class"].items() if v["support"]}
    return {"test": rep, "per_class_accuracy": {c: v["recall"] for c, v in present.items()},
            "n": len(synthetic), "paper": paper.TABLE5}


def cosine(real, synthetic, f_real, real_feat_labels, f_syn) -> dict:
    """Check 3 (Table 7) in pixel space and in the reference classifier's feature space."""
    if real.image_size != synthetic.image_size:
        raise UserError(f"pixel-space cosine needs equal image sizes; real {real.image_size}, "
                        f"synthetic {synthetic.image_size} (load both at the same --size)")
    return {
        "pixel": metrics.cosine_table(real.images, real.labels, synthetic.images, synthetic.labels, real.classes),
        "features": metrics.cosine_table(f_real, real_feat_labels, f_syn, synthetic.labels, real.classes),
        "definition": "mean pairwise cosine over all pairs (self-pairs excluded for real–real); "
                      "difference_pct = 100·(rr − rs)/rr; pixel space = raw uint8 RGB vectors",
        "paper": paper.TABLE7,
    }


OVERALL = ("class-balanced: the same number k of real and of synthetic images from every class present in both "
           "(k = the smallest of those per-class counts), so the real set's class proportions do not inflate it")
MACRO = "mean of the per-class values over the classes present in both sets"


def balanced_indices(y_real: torch.Tensor, y_syn: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(real idx, synthetic idx): a seeded k-per-class subset of each side, k = the smallest
    per-class count over the classes present on both sides."""
    classes = [int(c) for c in torch.unique(y_real) if bool((y_syn == c).any())]
    if not classes:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    k = min(min(int((y_real == c).sum()), int((y_syn == c).sum())) for c in classes)
    g = torch.Generator().manual_seed(int(seed))
    pick = []
    for y in (y_real, y_syn):
        idx = [torch.nonzero(y == c).flatten() for c in classes]
        pick.append(torch.sort(torch.cat([i[torch.randperm(len(i), generator=g)[:k]] for i in idx])).values)
    return pick[0], pick[1]


def _per_class_distances(f_real, y_real, f_syn, y_syn, classes, seed, splits, progress=False, what="") -> dict:
    from tqdm.auto import tqdm

    out = {}
    for k, cls in enumerate(tqdm(classes, desc=f"distances {what}".strip(), unit="class", disable=not progress)):
        r, s = f_real[y_real == k], f_syn[y_syn == k]
        out[cls] = metrics.distance_report(r, s, seed=seed + k, splits=splits)
        if min(len(r) // 2, len(s)) > NEAREST_K:  # fidelity and diversity apart
            out[cls]["prdc"] = metrics.prdc_report(r, s, seed=seed + k, splits=splits)
    # overall ("all"): class-balanced, k of every class on both sides; fewer resampling splits (n is large)
    ir, is_ = balanced_indices(y_real, y_syn, seed)
    out["overall"] = metrics.distance_report(f_real[ir], f_syn[is_], seed=seed, splits=max(1, splits // 4))
    out["overall"]["definition"] = OVERALL
    fds = [r["fd"] for c, r in out.items() if c in classes and r.get("fd") is not None]
    kids = [r["kid"]["mean"] for c, r in out.items() if c in classes and isinstance(r.get("kid"), dict)]
    out["overall"]["macro"] = {"fd": sum(fds) / len(fds) if fds else None,
                               "kid": sum(kids) / len(kids) if kids else None, "definition": MACRO}
    return out


def distances(real, synthetic, f_real, y_real, f_syn, *, ref_info, inception_weights=None, seed=0,
              splits=20, progress=True, device=None) -> dict:
    """Domain FD/KID (reference W-Net features) always; Inception FID/KID when weights exist."""
    t0 = time.time()
    y_syn = synthetic.labels
    res = {"domain": {"feature_extractor": f"penultimate layer ({f_real.shape[1]}-d) of the reference "
                                           f"{ref_info.get('model', 'wnet')} classifier ({ref_info['run']})",
                      "per_class": _per_class_distances(f_real.double(), y_real, f_syn.double(), y_syn,
                                                        real.classes, seed, splits, progress, "(W-Net)")}}
    net, info = metrics.load_inception(inception_weights)
    proto = metrics.inception.protocol(info)
    if net is None:
        res["inception"] = {"available": False, "note": info["note"], "protocol": proto}
    else:
        fr = metrics.inception_features(net, real.images, progress=progress, device=device)
        fs = metrics.inception_features(net, synthetic.images, progress=progress, device=device)
        per = _per_class_distances(fr, real.labels, fs, y_syn, real.classes, seed, splits, progress, "(Inception)")
        res["inception"] = {"available": True, "per_class": per, "protocol": proto,
                            "torchmetrics_fid_overall": metrics.torchmetrics_fid(fr, fs)}
    res["domain"]["protocol"] = {k: v for k, v in proto.items() if k in ("fd", "kid")}
    for space in ("domain", "inception"):
        if isinstance(res[space].get("protocol"), dict):
            res[space]["protocol"] = {**res[space]["protocol"], "overall": "class-balanced (k per class)"}
    res["floor"] = "real-vs-real: two random halves of the real images; compare with 'matched' (same sizes)"
    res["preferred_when_small"] = f"KID is the number to read when a class has < {metrics.KID_PREFERRED_BELOW} images"
    res["seconds"] = time.time() - t0
    return res
