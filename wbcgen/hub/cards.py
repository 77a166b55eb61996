"""Model and dataset cards: facts from the run → Jinja templates in ``cards/`` → validated card.

Validation is offline: the rendered text must parse with huggingface_hub's ``ModelCard`` /
``DatasetCard`` (strict metadata, ``model-index`` parsed into ``EvalResult`` objects and
converted back losslessly) and must carry the fields wbcgen promises (license, tags,
intended use, data attribution). ``RepoCard.validate()`` needs the network, so it is not used.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jinja2
import yaml

from classifiers.runtime import UserError, bundled_dir
from wbcgen import __version__
from wbcgen.data import CLASSES

from .layout import IMAGE_SUFFIXES, Staged

PBC_CITATION = ("Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J., \"A dataset of microscopic "
                "peripheral blood cell images for development of automatic recognition systems\", Data in Brief 30 "
                "(2020) 105474, Mendeley Data doi:10.17632/snkd93bnjr.1, licence CC BY 4.0.")
SOURCES: dict[str, dict[str, str]] = {
    "pbc": {"name": "PBC (peripheral blood cell images, Acevedo et al. 2020)", "license": "cc-by-4.0",
            "citation": PBC_CITATION},
    "zheng2018": {"name": "Zheng et al. 2018 WBC segmentation sets", "license": "gpl-3.0",
                  "citation": "Zheng X. et al., \"Fast and robust segmentation of white blood cell images by "
                              "self-supervised learning\", Micron 107 (2018) 55-71 (published with GPL-3.0)."},
    "bccd": {"name": "BCCD blood cell images (augmented, 4 classes)", "license": "mit",
             "citation": "BCCD Dataset (MIT licence), the \"Blood Cell Images\" augmented set."},
    "other": {"name": "user-provided images", "license": "other", "citation": ""},
}
#: Hub dataset ids of the known training sources. None: no official copy on the Hub that wbcgen
#: can vouch for, so cards link no dataset unless ``--hub-dataset ID`` names one.
HUB_DATASETS: dict[str, str | None] = {"pbc": None, "zheng2018": None, "bccd": None, "other": None}
#: Hub ids of the ImageNet weights wbcgen's torchvision baselines load (``--imagenet-weights``):
#: torchvision's own weights, as ported to the Hub by timm.
IMAGENET_BASES: dict[str, str] = {"resnet50": "timm/resnet50.tv_in1k", "vgg16": "timm/vgg16.tv_in1k"}
INTENDED_USE = "research and education only"
NOT_DIAGNOSIS = "not for diagnosis"


def cards_dir() -> Path:
    """``cards/`` of the source tree, or ``<prefix>/share/wbcgen/cards`` of a wheel install
    (override with WBCGEN_CARDS_DIR)."""
    d = Path(os.environ.get("WBCGEN_CARDS_DIR") or bundled_dir("cards", "model_card.md.j2"))
    if not (d / "model_card.md.j2").is_file():
        raise UserError(f"card templates not found in {d}: set WBCGEN_CARDS_DIR to the project's cards/ folder")
    return d


def _yaml(value: Any) -> str:
    """One YAML flow-style value with safe quoting for any string the run provides (PyYAML's
    own dumper, so numbers such as 9e-06 read back as floats, not strings)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=1 << 30)
    return text[:-5] if text.endswith("\n...\n") else text.strip()


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(cards_dir())), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["yaml"] = _yaml
    env.filters["num"] = lambda v, d=4: "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    env.filters["sig"] = lambda v: "–" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    return env


# ---------------------------------------------------------------------------- facts


def _strings(obj: Any):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def detect_sources(*objs: Any) -> list[str]:
    """Training-data sources mentioned in run configs / results (``pbc``, ``zheng2018``, ``bccd``)."""
    text = " ".join(s.lower() for o in objs for s in _strings(o))
    found = [k for k, keys in (("pbc", ("pbc", "sample_data")), ("zheng2018", ("zheng",)), ("bccd", ("bccd",)))
             if any(key in text for key in keys)]
    return found


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        for k in ("overall", "value", "mean", "all"):
            if k in v:
                return _num(v[k])
    return None


def _overall(block: Any) -> tuple[float | None, dict]:
    """(value, extras) of a headline distance block ``{"overall", "floor", "matched", "std", ...}``."""
    if not isinstance(block, dict):
        return _num(block), {}
    extras = {k: block[k] for k in ("floor", "matched", "std", "macro") if isinstance(block.get(k), (int, float))}
    return _num(block.get("overall", block)), extras


def _distance_meta(results: dict, space: str) -> dict:
    """Protocol facts for ``space`` (``inception`` | ``domain``) from evaluate's checks.distances."""
    d = ((results.get("checks") or {}).get("distances") or {}).get(space) or {}
    proto = d.get("protocol") if isinstance(d.get("protocol"), dict) else {}
    overall = (d.get("per_class") or {}).get("overall") or {}
    meta = {k: v for k, v in proto.items() if isinstance(v, (str, int, float, bool))}
    if isinstance(d.get("feature_extractor"), str):
        meta["feature_extractor"] = d["feature_extractor"]
    for k in ("n_real", "n_synthetic", "feature_dim"):
        if isinstance(overall.get(k), int):
            meta[k] = overall[k]
    return meta


def eval_summary(results: dict | None) -> dict:
    """The card's numbers from a results.json: the classifier schema (``test``) plus evaluate's
    headline keys (``tstr_accuracy``, ``fid``, ``kid``, ``domain_fd``, ``domain_kid``: each
    ``{"overall", "floor", "matched", ...}``) and the pinned protocol under ``checks.distances``."""
    if not results:
        return {}
    test = results.get("test") if isinstance(results.get("test"), dict) else {}
    out: dict[str, Any] = {"accuracy": _num(test.get("accuracy")),
                           "balanced_accuracy": _num(test.get("balanced_accuracy")),
                           "macro_f1": _num((test.get("macro") or {}).get("f1")),
                           "train_on": results.get("train_on"), "model": results.get("model")}
    tstr = _num(results.get("tstr_accuracy"))
    if tstr is None and results.get("train_on") == "synthetic":
        tstr = out["accuracy"]
    if tstr is None:
        tstr = _num(((results.get("checks") or {}).get("tstr") or {}).get("test", {}).get("accuracy"))
    out["tstr_accuracy"] = tstr
    distances = {}
    for key, space in (("fid", "inception"), ("kid", "inception"), ("domain_fd", "domain"), ("domain_kid", "domain")):
        value, extras = _overall(results.get(key))
        if value is not None:
            distances[key] = {"value": value, **extras, "protocol": _distance_meta(results, space)}
    out["distances"] = distances or None
    src = results.get("sources") or {}
    data = src.get("test") or src.get("real") or results.get("data")
    out["test_data"] = data if isinstance(data, str) else ((data or {}).get("path") or (data or {}).get("source"))
    if isinstance(results.get("judges"), list) and len(results["judges"]) > 1:
        out["judges"] = [{k: j.get(k) for k in ("model", "accuracy", "balanced_accuracy", "macro_f1")}
                         for j in results["judges"] if isinstance(j, dict)]
    leak = results.get("leakage")
    if leak == "unknown" or isinstance(leak, dict):
        out["leakage"] = leak
    return {k: v for k, v in out.items() if v is not None}


DISTANCE_NAMES = {"fid": "FID (Inception-v3)", "kid": "KID (Inception-v3)",
                  "domain_fd": "Fréchet distance in domain-classifier features",
                  "domain_kid": "KID in domain-classifier features"}
_NETS = {"wnet": "W-Net", "dclnn": "DCLNN", "wbcsnet": "WBCsNet", "resnet50": "ResNet-50", "vgg16": "VGG-16",
         "alexnet": "AlexNet", "rnn": "RNN"}


def feature_network(protocol: dict) -> str | None:
    """The network whose features a distance was measured in, as recorded by evaluate
    (``feature_network``, else the ``reference <model> classifier`` in ``feature_extractor``)."""
    net = protocol.get("feature_network")
    if not isinstance(net, str):
        m = re.search(r"reference (\S+) classifier", str(protocol.get("feature_extractor") or ""))
        net = m.group(1) if m else None
    return _NETS.get(net.lower(), net) if net else None


def distance_name(key: str, protocol: dict) -> str:
    """``FID (Inception-v3)``, or ``Fréchet distance in W-Net features`` with the network read from the protocol."""
    net = feature_network(protocol) if key.startswith("domain_") else None
    if net is None:
        return DISTANCE_NAMES[key]
    return f"Fréchet distance in {net} features" if key == "domain_fd" else f"KID in {net} features"


def model_index(summary: dict, source: str, hub_dataset: str | None = None) -> list[dict]:
    """``model-index`` results: TSTR / test accuracy (image-classification) and FID/KID plus the
    domain-feature distances (unconditional-image-generation), each with its pinned protocol,
    sample counts and real-vs-real floor as metric ``args``. The dataset ``type`` is the Hub
    dataset id (``hub_dataset`` or :data:`HUB_DATASETS`), else the source's key; never a local path."""
    dataset = {"type": hub_dataset or HUB_DATASETS.get(source) or source, "name": SOURCES[source]["name"],
               "split": "test"}
    out, cls_metrics = [], []
    if summary.get("tstr_accuracy") is not None:
        cls_metrics.append({"type": "accuracy", "value": round(summary["tstr_accuracy"], 4),
                            "name": "TSTR accuracy (train on synthetic, test on real)"})
    elif summary.get("accuracy") is not None:
        cls_metrics.append({"type": "accuracy", "value": round(summary["accuracy"], 4), "name": "Test accuracy"})
        if summary.get("balanced_accuracy") is not None:
            cls_metrics.append({"type": "balanced_accuracy", "value": round(summary["balanced_accuracy"], 4),
                                "name": "Balanced accuracy"})
    if cls_metrics:
        out.append({"task": {"type": "image-classification", "name": "White-blood-cell classification"},
                    "dataset": dataset, "metrics": cls_metrics})
    gen = []
    for key, d in (summary.get("distances") or {}).items():
        args = {**d["protocol"], **{k: round(d[k], 6) for k in ("floor", "matched", "std", "macro") if k in d}}
        gen.append({"type": key, "value": round(d["value"], 6), "name": distance_name(key, d["protocol"]),
                    **({"args": args} if args else {})})
    if gen:
        out.append({"task": {"type": "unconditional-image-generation", "name": "Synthetic WBC image generation"},
                    "dataset": dataset, "metrics": gen})
    return out


def base_model(config: dict, explicit: str | None = None) -> tuple[str | None, str | None]:
    """(Hub id for ``base_model``, what training started from) of a classifier config: ``--base-model``,
    the repo id of an ``--init-from`` folder downloaded from the Hub (its wbcgen.json), or the
    Hub copy of torchvision's ImageNet weights for ``--imagenet-weights``."""
    init = config.get("init_from")
    if explicit:
        return explicit, init or explicit
    if not init:
        return None, None
    p = Path(str(init))
    manifest = p / "wbcgen.json"
    if p.is_dir() and manifest.is_file():
        try:
            import json

            repo = json.loads(manifest.read_text(encoding="utf-8")).get("repo_id")
        except (OSError, ValueError):
            repo = None
        if isinstance(repo, str) and repo.count("/") == 1:
            return repo, str(init)
    if p.suffix in (".pth", ".pt") or "imagenet" in p.name.lower():
        return IMAGENET_BASES.get(str(config.get("model"))), f"ImageNet weights `{p.name}`"
    return None, f"`{p.name}`"


def dataset_features(info: dict) -> list[dict]:
    """``features`` of the dataset card's config: image, ``label`` as a ClassLabel in wbcgen's class
    order (then any other labels), and the other metadata.csv columns (int64 or string)."""
    extra = sorted(c for c in (info.get("counts") or {}) if c not in CLASSES)
    names = {str(i): c for i, c in enumerate(list(CLASSES) + extra)}
    feats = [{"name": "image", "dtype": "image"}]
    for col, kind in (info.get("column_types") or {"label": "class_label"}).items():
        feats.append({"name": col, "dtype": {"class_label": {"names": names}} if kind == "class_label" else kind})
    return feats


def _context(staged: Staged, repo_id: str, license: str | None, source: str, hub_dataset: str | None = None,
             base: str | None = None) -> dict:
    info = staged.info
    summary = eval_summary(info.get("evaluation") or info.get("results"))
    src = SOURCES[source]
    classes = info.get("classes") or {}
    counts = info.get("counts") or {}
    conditional = staged.kind == "gan" and "all" in classes  # one class-conditional model in all/
    lists = {f: c["train_images"] for f, c in classes.items() if isinstance(c, dict) and c.get("train_images")}
    base_id, started = base_model(info.get("config") or {}, base) if staged.kind == "classifier" else (base, base)
    hub_ds = hub_dataset or HUB_DATASETS.get(source)
    image_files = [f for f in staged.files if f.lower().endswith(IMAGE_SUFFIXES)]
    return {
        "repo_id": repo_id, "name": repo_id.split("/")[-1], "kind": staged.kind, "version": __version__,
        "license": license or src["license"], "source": source, "source_name": src["name"],
        "citation": src["citation"], "pbc": source == "pbc", "files": sorted(staged.files),
        "classes": (info.get("gan_classes") or []) if conditional else
        ([c for c in CLASSES if c in classes] or [c for c in counts]),
        "conditional": conditional, "train_lists": lists,
        "train_counts": (lists.get("all") or {}).get("per_class", {}) if conditional
        else {c: t["n"] for c, t in lists.items()},
        "image_size": next((c["config"]["image_size"] for c in classes.values() if isinstance(c, dict)
                            and (c.get("config") or {}).get("image_size")), None),
        "dataset_lists": info.get("train_images") or {},
        "from_conditional": any(isinstance(g, dict) and (g.get("run_config") or {}).get("cls") == "all"
                                for g in ((info.get("generation") or {}).get("generators") or {}).values()),
        "class_info": classes, "counts": counts, "total": sum(counts.values()), "summary": summary,
        "model_index": model_index(summary, source, hub_ds), "config": info.get("config") or {},
        "sharded": info.get("sharded", False), "generators": info.get("generators") or {},
        "seeds": info.get("seeds") or [], "columns": info.get("columns") or [],
        "has_report": "report.html" in staged.files, "intended_use": INTENDED_USE,
        "distance_name": distance_name, "hub_dataset": hub_ds, "base_model": base_id, "started_from": started,
        "features": dataset_features(info) if staged.kind == "dataset" else [],
        "class_names": list(CLASSES) + sorted(c for c in counts if c not in CLASSES),
        "data_files": ["metadata.csv"] + sorted({f"**/*{Path(f).suffix}" for f in image_files}),
        "max_per_folder": info.get("max_per_folder", 10_000), "shard_size": info.get("shard_size", 5_000),
        "formats": sorted({Path(f).suffix.lstrip(".").upper() for f in image_files}),
    }


def _size_category(n: int) -> str:
    for limit, cat in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return cat
    return "1M<n<10M"


def render_card(staged: Staged, *, repo_id: str, license: str | None = None, source: str = "pbc",
                hub_dataset: str | None = None, base_model: str | None = None) -> str:
    """Render README.md for a staged repo (model card or dataset card) and validate it."""
    if source not in SOURCES:
        raise UserError(f"unknown data source {source!r}; expected one of {', '.join(SOURCES)}")
    ctx = _context(staged, repo_id, license, source, hub_dataset, base_model)
    if staged.repo_type == "dataset":
        text = _env().get_template("dataset_card.md.j2").render(size_category=_size_category(ctx["total"]), **ctx)
    else:
        text = _env().get_template("model_card.md.j2").render(**ctx)
    validate_card(text, staged.repo_type, expect_model_index=ctx["model_index"], pbc=ctx["pbc"])
    return text


def validate_card(text: str, repo_type: str, *, expect_model_index: list | None = None, pbc: bool = False):
    """Parse with ModelCard/DatasetCard (strict) and check wbcgen's promises; return the card."""
    from huggingface_hub import DatasetCard, ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index

    cls = DatasetCard if repo_type == "dataset" else ModelCard
    try:
        card = cls(text, ignore_metadata_errors=False)
    except Exception as e:  # ValueError from the metadata parser, yaml errors
        raise UserError(f"the rendered {repo_type} card is invalid: {e}") from None
    data = card.data.to_dict()
    missing = [k for k in ("license", "tags") if not data.get(k)]
    if missing:
        raise UserError(f"the rendered {repo_type} card lacks {', '.join(missing)} in its metadata")
    low = card.text.lower()
    if INTENDED_USE not in low or NOT_DIAGNOSIS not in low:
        raise UserError(f"the rendered {repo_type} card must state '{INTENDED_USE}' and '{NOT_DIAGNOSIS}'")
    if pbc and ("cc by 4.0" not in low or "acevedo" not in low):
        raise UserError("a card for PBC-derived files must carry the PBC CC BY 4.0 attribution")
    if repo_type != "dataset" and expect_model_index:
        got = eval_results_to_model_index(card.data.model_name, card.data.eval_results or [])
        if got[0]["results"] != _strip_none(expect_model_index):
            raise UserError("the rendered model card's model-index does not round-trip through huggingface_hub")
    return card


def _strip_none(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_strip_none(v) for v in obj if v is not None]
    if isinstance(obj, dict):
        return {k: _strip_none(v) for k, v in obj.items() if v is not None}
    return obj
