"""The leakage guard: no image ``evaluate`` tests or validates on may be one a generator (or
the ``--classifier`` run) was trained on.

A synthetic folder written by ``wbcgen sample`` carries ``generation.json`` and
``train_images.csv`` (``generator,sha256,label``: every generator's training list), so the
check needs neither the GAN run folders nor the original paths.
"""
from __future__ import annotations

from pathlib import Path

import torch

from classifiers.runtime import UserError
from wbcgen.provenance import dataset_lists, read_train_images

FIX = ("make a split with `wbcgen data split` and pass the same --split to train-gan and evaluate "
       "(or --allow-overlap to go on and mark the results)")


def generator_lists(syn_path) -> tuple[dict[str, set[str]] | None, str | None]:
    """``({generator class: {sha256}}, None)`` or ``(None, why unknown)``."""
    if syn_path is None or not Path(syn_path).is_dir():
        return None, "the synthetic set is not a folder written by `wbcgen sample`"
    found = dataset_lists(syn_path)  # a list that does not match generation.json is refused here
    if found is None:
        return None, (f"{Path(syn_path).name} has no generation.json/train_images.csv (made by an older "
                      "`wbcgen sample` or another tool), so its generators' training images are unknown")
    lists, unknown = found
    if unknown:
        return None, f"the training images of the {', '.join(unknown)} generator(s) are not recorded"
    return {c: {r["sha256"] for r in rows} for c, rows in lists.items()}, None


def classifier_list(run_dir) -> set[str] | None:
    rows = read_train_images(Path(run_dir)) if run_dir is not None else None
    return {r["sha256"] for r in rows} if rows is not None else None


def overlap(shas: list[str | None], labels: torch.Tensor, idx, seen: set[str], classes) -> dict:
    """Distinct images among ``idx`` whose sha256 is in ``seen``, counted per class."""
    hit: dict[str, str] = {}
    for i in sorted({int(i) for i in idx}):
        s = shas[i]
        if s is not None and s in seen:
            hit[s] = classes[int(labels[i])]
    per: dict[str, int] = {}
    for c in hit.values():
        per[c] = per.get(c, 0) + 1
    return {"n_overlap": len(hit), "per_class": {c: per[c] for c in classes if c in per}}


def _per_class_text(per: dict) -> str:
    return ", ".join(f"{c} {n}" for c, n in per.items())


def guard(pool_shas, pool, splits: list[dict], syn_path, *, uses_generators: bool, allow_overlap: bool,
          classifier=None, classifier_shas=None, compared=None, notes: list[str]) -> dict | str | None:
    """The ``leakage`` entry of results.json; raises :class:`UserError` on overlap unless allowed."""
    eval_idx: set[int] = set()
    for s in splits:
        for part in ("test", "val"):
            if s.get(part) is not None:
                eval_idx.update(int(i) for i in s[part])
    out: dict = {}
    if uses_generators:
        lists, why = generator_lists(syn_path)
        if lists is None:
            notes.append(f"leakage unknown: {why}; the numbers may include test images the GANs trained on")
            out = {"generators": "unknown"}
        else:
            seen = set().union(*lists.values()) if lists else set()
            ov = overlap(pool_shas, pool.labels, eval_idx, seen, pool.classes)
            if ov["n_overlap"] and not allow_overlap:
                raise UserError(f"{ov['n_overlap']} test/validation image(s) ({_per_class_text(ov['per_class'])}) "
                                f"were in the training data of the generators that made "
                                f"{Path(syn_path).name}: {FIX}")
            out = {**ov, "n_checked": len(eval_idx), "generators": sorted(lists)}
    if classifier is not None:
        if classifier_shas is None:
            notes.append(f"leakage unknown for --classifier {Path(classifier).name}: it has no train_images.csv")
            out["classifier"] = "unknown"
        else:
            ov = overlap(pool_shas, pool.labels, pool.real if compared is None else compared, classifier_shas,
                         pool.classes)
            if ov["n_overlap"] and not allow_overlap:
                raise UserError(f"the --classifier run {Path(classifier).name} was trained on {ov['n_overlap']} of "
                                f"the real images its features are compared on ({_per_class_text(ov['per_class'])}); "
                                "use a classifier trained on the split's train part only, or leave --classifier "
                                "out (or --allow-overlap)")
            out["classifier"] = ov
    if not out:
        return None
    if out.get("generators") == "unknown" or out.get("classifier") == "unknown":
        return "unknown"
    total = out.get("n_overlap", 0) + (out.get("classifier") or {}).get("n_overlap", 0)
    if total:
        notes.append(f"LEAKAGE: {total} image(s) used for testing were seen in training "
                     f"(--allow-overlap); these numbers overstate how well the synthetic cells work")
    out["allowed"] = bool(allow_overlap)
    out.setdefault("n_overlap", 0)
    out.setdefault("per_class", {})
    return out


def beyond_real_train(pool_shas, pool, splits: list[dict], syn_path) -> dict | None:
    """mixed / dose: generator training images outside the classifier's real training images
    (the synthetic cells carry information from more real cells than the classifier saw)."""
    lists, _ = generator_lists(syn_path)
    if not lists:
        return None
    seen = set().union(*lists.values())
    real_train = set()
    for s in splits:
        tr = s["train"][~torch.isin(s["train"], pool.synthetic)]
        real_train.update(pool_shas[int(i)] for i in tr)
        if s.get("val") is not None:
            real_train.update(pool_shas[int(i)] for i in s["val"])
    per = {c: len(v - real_train) for c, v in lists.items() if v - real_train}
    return {"n": len(seen - real_train), "per_generator": per,
            "definition": "real images the generators trained on that are not among the classifier's real "
                          "training/validation images"}
