"""Training recipes: TOML files in ``recipes/`` (or any path), merged over :data:`DEFAULTS`.

Precedence: command-line flags > recipe file (> the recipe it ``extends``) > DEFAULTS.
The fully resolved recipe is saved in every run's config.json.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from classifiers.runtime import UserError, bundled_dir

#: Folder of the bundled recipes: the repository's ``recipes/`` or a wheel's
#: ``<prefix>/share/wbcgen/recipes``; the environment variable CLASSIFIERS_RECIPES overrides both.
RECIPE_DIR = Path(os.environ.get("CLASSIFIERS_RECIPES") or bundled_dir("recipes"))

DEFAULTS: dict[str, Any] = {
    "name": "defaults",
    "description": "",
    "model": "wnet",
    "model_args": {},                 # extra init args, e.g. {dropout = 0.5}
    "train": {
        "epochs": 30,
        "max_steps": 0,               # stop after this many optimisation steps (0 = epochs × batches)
        "min_steps": 0,               # at least this many optimizer steps (more epochs on tiny sets)
        "batch_size": 64,
        "optimizer": "adamw",         # adam | adamw | sgd
        "lr": 1e-3,
        "weight_decay": 0.0,
        "momentum": 0.9,              # sgd momentum / adam beta1
        "nesterov": False,
        "schedule": "onecycle",       # constant | onecycle | cosine | step
        "pct_start": 0.25,            # onecycle warm-up share
        "step_epochs": 30,            # step schedule: decay every N epochs ...
        "gamma": 0.1,                 # ... by this factor
        "label_smoothing": 0.0,
        "loss": "auto",               # auto (the model's) | ce | hinge-ovr | hinge-multiclass
        "balanced_sampling": True,
        "grad_clip": 0.0,
        "freeze_trunk": False,        # train only the final layer (deep activation features)
        "freeze_bn": False,           # BatchNorm layers keep their (source) statistics: eval mode while training
        "amp": True,                  # bf16 autocast on CUDA
        "cpu_bf16": False,            # bf16 autocast on CPUs with native bf16 (about 2x faster)
        "channels_last": "auto",      # auto = on CUDA; true/false to force
    },
    "augment": {"rotate": "dihedral", "scale": [1.0, 1.0], "jitter": 0.0, "hue": 0.0,
                # acquisition robustness (classifiers/stainaug.py), 0 = off: HED stain jitter,
                # gamma (log range), per-channel tint gain, Gaussian blur sigma (px), JPEG-like
                # quantisation (1 ~ quality 50)
                "hed": 0.0, "gamma": 0.0, "tint": 0.0, "blur": 0.0, "jpeg": 0.0},
    "early_stopping": {
        "val_fraction": 0.1,          # stratified slice of each training split (0 = none)
        "patience": 0,                # epochs without improvement before stopping (0 = never stop early)
        "metric": "balanced_accuracy",
        "restore_best": True,         # end with the best-on-validation weights
    },
    "protocol": {
        "kind": "cv",                 # cv | holdout | train (no test) ; --test PATH = train/test
        "folds": 10,
        "test_fraction": 0.2,         # holdout only
        "per_class": 0,               # few-shot: K training images per class, the rest is the test set
    },
    "transfer": {"lr": 1e-4, "head_lr": 1e-3, "head_weight_decay": 1e-3, "head_epochs": 20},
    "eval": {"tta": False, "batch_size": 256},
}


def deep_merge(base: dict, over: dict, where: str = "") -> dict:
    """``over`` merged into a copy of ``base``; unknown keys are an error (catches typos)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise UserError(f"unknown recipe key {where + k!r}; known keys: {', '.join(base)}")
        if isinstance(base[k], dict) and k != "model_args":
            if not isinstance(v, dict):
                raise UserError(f"recipe key {where + k!r} must be a table")
            out[k] = deep_merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or os.sep in str(name_or_path):
        if not p.is_file():
            raise UserError(f"recipe file {p} does not exist")
        return p
    p = RECIPE_DIR / f"{name_or_path}.toml"
    if not p.is_file():
        raise UserError(f"no recipe named {str(name_or_path)!r}; available: {', '.join(list_recipes()) or 'none'}")
    return p


def list_recipes() -> list[str]:
    """Bundled classifier recipes (files named after a model: wnet-*, dclnn*, ...; the
    folder also holds other tools' recipes, which are not listed)."""
    from classifiers.registry import list_models

    prefixes = {m.split("-")[0] for m in list_models()}
    files = RECIPE_DIR.glob("*.toml") if RECIPE_DIR.is_dir() else []
    return sorted(p.stem for p in files if p.stem.split("-")[0] in prefixes)


def _read(path: Path, seen: tuple = ()) -> dict:
    if path.resolve() in seen:
        raise UserError(f"recipe {path} extends itself")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"recipe {path} is not valid TOML ({e})") from None
    parent = data.pop("extends", None)
    base = _read(recipe_path(parent), seen + (path.resolve(),)) if parent else {}
    if "model" in data and base.get("model") not in (None, data["model"]):
        base.pop("model_args", None)  # another network: the parent's init args do not apply
    if "model_args" in data:
        base.pop("model_args", None)  # replaced as a whole, never merged
    return _merge_loose(base, data)


def _merge_loose(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge_loose(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_recipe(name_or_path: str | os.PathLike | dict | None) -> dict:
    """A resolved recipe dict. ``None`` gives DEFAULTS; a dict is validated and completed."""
    if name_or_path is None:
        return copy.deepcopy(DEFAULTS)
    if isinstance(name_or_path, dict):
        return validate(deep_merge(DEFAULTS, name_or_path))
    path = recipe_path(name_or_path)
    recipe = deep_merge(DEFAULTS, _read(path))
    if recipe["name"] == "defaults":
        recipe["name"] = path.stem
    return validate(recipe)


def default_recipe_for(model: str) -> str | None:
    """``<model>-cpu`` if bundled, else ``<model>-paper``/``<model>``, else None (DEFAULTS)."""
    names = set(list_recipes())
    for cand in (f"{model}-cpu", f"{model}-paper", model):
        if cand in names:
            return cand
    return None


def apply_overrides(recipe: dict, **flags: Any) -> dict:
    """Command-line flags over a recipe. Keys: epochs, batch_size, lr, folds, test_fraction,
    protocol, patience, val_fraction, per_class. ``None`` values are ignored."""
    where = {"epochs": "train", "batch_size": "train", "lr": "train", "folds": "protocol", "per_class": "protocol",
             "test_fraction": "protocol", "protocol": "protocol", "patience": "early_stopping",
             "val_fraction": "early_stopping"}
    out = copy.deepcopy(recipe)
    for k, v in flags.items():
        if v is None:
            continue
        if k not in where:
            raise ValueError(f"unknown override {k}")
        out[where[k]]["kind" if k == "protocol" else k] = v
    return validate(out)


def validate(r: dict) -> dict:
    t, p = r["train"], r["protocol"]
    checks = [
        (t["optimizer"] in ("adam", "adamw", "sgd"), f"optimizer must be adam, adamw or sgd, not {t['optimizer']!r}"),
        (t["schedule"] in ("constant", "onecycle", "cosine", "step"), f"unknown schedule {t['schedule']!r}"),
        (t["loss"] in ("auto", "ce", "hinge-ovr", "hinge-multiclass"), f"unknown loss {t['loss']!r}"),
        (int(t["epochs"]) >= 1, "epochs must be at least 1"),
        (int(t["max_steps"]) >= 0, "max_steps must be ≥ 0"),
        (int(t["batch_size"]) >= 1, "batch size must be at least 1"),
        (float(t["lr"]) > 0, "learning rate must be positive"),
        (p["kind"] in ("cv", "holdout", "train", "train-test", "few-shot"), f"unknown protocol {p['kind']!r}"),
        (p["kind"] != "few-shot" or int(p["per_class"]) >= 1, "the few-shot protocol needs per_class >= 1"),
        (p["kind"] != "few-shot" or int(p["folds"]) >= 1, "the few-shot protocol needs folds >= 1"),
        (int(p["folds"]) >= 2 or p["kind"] != "cv", "cross-validation needs at least 2 folds"),
        (int(t["min_steps"]) >= 0, "min_steps must be >= 0"),
        (0 <= float(r["early_stopping"]["val_fraction"]) < 1, "val_fraction must be in [0, 1)"),
        (r["augment"]["rotate"] in ("dihedral", "any", "none"), "augment.rotate must be dihedral, any or none"),
        (all(float(r["augment"][k]) >= 0 for k in ("hed", "gamma", "tint", "blur", "jpeg")),
         "augment.hed/gamma/tint/blur/jpeg must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(f"bad recipe {r.get('name', '')!r}: {msg}")
    return r
