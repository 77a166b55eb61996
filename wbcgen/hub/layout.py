"""What a folder is (GAN run, classifier run, generated dataset, evaluation) and the exact
repo layout each kind gets on the Hub.

Repo layouts (``README.md`` card and ``wbcgen.json`` manifest are added by :mod:`.push`):

* GAN (one model repo for all classes)::

    <class>/model.safetensors  <class>/config.json     generator (PyTorchModelHubMixin)
    <class>/run_config.json    <class>/samples.png      training config, last sample grid
    (a class-conditional model is ONE folder, ``all/``, whose config.json lists its classes)
    results.json  report.html                           evaluation (if given / present)

* classifier: ``model.safetensors config.json results.json confusion_matrix.png report.html``
* evaluation: ``results.json report.html *.png``
* dataset (dataset repo, ImageFolder): ``metadata.csv`` + ``<class>/<file>`` (or
  ``<class>/<shard>/<file>`` when a class has more than ``max_per_folder`` files).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from classifiers.runtime import UserError, atomic_write_text
from wbcgen.data import CLASSES

#: The only file types wbcgen ever downloads, copies out of a snapshot or pushes.
SAFE_SUFFIXES = (".safetensors", ".json", ".png", ".jpg", ".jpeg", ".bmp", ".csv", ".md", ".html")
SAFE_PATTERNS = [f"*{s}" for s in SAFE_SUFFIXES] + [f"*{s.upper()}" for s in SAFE_SUFFIXES[2:6]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_PER_FOLDER = 10_000
KINDS = ("gan", "classifier", "dataset", "evaluation")


@dataclass
class Staged:
    """What :func:`stage` wrote: the repo kind/type and facts the cards are rendered from."""

    kind: str
    repo_type: str
    files: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def is_safe(path: str | Path) -> bool:
    return str(path).lower().endswith(SAFE_SUFFIXES)


def safe_relpath(name: str, where: str) -> Path:
    """A relative path that stays inside its root (no absolute paths, no ``..``)."""
    p = Path(name.replace("\\", "/"))
    if not name or p.is_absolute() or ".." in p.parts or name.startswith("/"):
        raise UserError(f"{where} lists an unsafe file name {name!r} (absolute or outside the folder)")
    return p


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({type(e).__name__})") from None
    return obj if isinstance(obj, dict) else {}


def read_metadata(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            cols = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__})") from None
    if "file_name" not in cols or "label" not in cols:
        raise UserError(f"{path} needs file_name and label columns, found {cols}")
    return cols, rows


def write_metadata(path: Path, cols: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- detection


def _is_model_dir(d: Path) -> bool:
    return (d / "model.safetensors").is_file() and (d / "config.json").is_file()


def hub_layout_classes(root: Path) -> dict[str, Path]:
    """Per-class generator folders of a GAN repo layout (``<class>/model.safetensors``); the
    classes of a conditional model (``all/``) map to its one folder."""
    found = {c: root / c for c in CLASSES if _is_model_dir(root / c)}
    if _is_model_dir(root / "all"):
        made = read_json(root / "all" / "config.json").get("classes")
        for c in made if isinstance(made, list) else []:
            if c in CLASSES and c not in found:
                found[c] = root / "all"
    return {c: found[c] for c in CLASSES if c in found}


def _run_class(run: Path) -> str | None:
    cfg = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    if cfg.get("cls") == "all" and isinstance(cfg.get("classes"), list):
        return "all"  # one conditional model for several classes
    for key in ("cls", "class", "class_name", "cell_class"):
        if isinstance(cfg.get(key), str) and cfg[key] in CLASSES:
            return cfg[key]
    for part in reversed(run.resolve().parts):
        if part in CLASSES:
            return part
    return None


def gan_runs(root: Path) -> dict[str, Path]:
    """class → GAN run dir (holding ``generator/``): the newest run per class below ``root``."""
    if _is_model_dir(root / "generator"):
        cls = _run_class(root)
        if cls is None:
            raise UserError(f"cannot tell which class the GAN run {root} is for (no class in config.json or path)")
        return {cls: root}
    found: dict[str, Path] = {}
    for d, subdirs, _ in os.walk(root):
        d = Path(d)
        subdirs[:] = sorted(s for s in subdirs if not s.startswith(".") and s not in ("checkpoints", "samples"))
        if len(d.relative_to(root).parts) > 4:
            subdirs[:] = []
            continue
        if "generator" in subdirs and _is_model_dir(d / "generator"):
            subdirs[:] = []
            cls = _run_class(d)
            if cls is None:
                continue
            key = ((d / "generator" / "model.safetensors").stat().st_mtime, d.name)
            old = found.get(cls)
            if old is None or key > ((old / "generator" / "model.safetensors").stat().st_mtime, old.name):
                found[cls] = d
    return {c: found[c] for c in (*CLASSES, "all") if c in found}


def detect_kind(root: str | Path) -> str:
    """``gan`` | ``classifier`` | ``dataset`` | ``evaluation`` for a folder, or a UserError."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    if (root / "metadata.csv").is_file():
        return "dataset"
    if hub_layout_classes(root) or gan_runs(root):
        return "gan"
    if _is_model_dir(root):
        return "classifier"
    if (root / "results.json").is_file():
        return "evaluation"
    raise UserError(f"cannot tell what {root} holds: expected a GAN run (generator/), a classifier run "
                    f"(model.safetensors + config.json), a generated dataset (metadata.csv) or an evaluation "
                    f"run (results.json)")


# ------------------------------------------------------------------------------- staging


def _put(src: Path, dest: Path, link: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copyfile(src, dest)


class _Writer:
    def __init__(self, dest: Path, link: bool):
        self.dest, self.link, self.files = dest, link, []

    def put(self, src: Path, rel: str) -> None:
        if not is_safe(rel):
            raise UserError(f"refusing to push {rel}: only {', '.join(SAFE_SUFFIXES)} files are allowed")
        _put(src, self.dest / rel, self.link)
        self.files.append(rel)

    def maybe(self, src: Path, rel: str) -> bool:
        if src.is_file():
            self.put(src, rel)
            return True
        return False


def _results(w: _Writer, root: Path, eval_dir: Path | None, info: dict) -> None:
    own = w.maybe(root / "results.json", "results.json")
    w.maybe(root / "report.html", "report.html")
    if own:
        info["results"] = read_json(root / "results.json")
    if eval_dir is not None:
        if not (eval_dir / "results.json").is_file():
            raise UserError(f"--eval {eval_dir} has no results.json")
        sub = "evaluation/" if own else ""
        w.put(eval_dir / "results.json", f"{sub}results.json")
        w.maybe(eval_dir / "report.html", f"{sub}report.html")
        info["evaluation"] = read_json(eval_dir / "results.json")


def _stage_gan(root: Path, w: _Writer, info: dict) -> None:
    layout = hub_layout_classes(root)  # a conditional model's classes share one folder: staged once
    runs = {d.name: (d, d) for d in dict.fromkeys(layout.values())} or \
        {c: (r / "generator", r) for c, r in gan_runs(root).items()}
    info["classes"] = {}
    for cls, (gen, run) in runs.items():
        w.put(gen / "model.safetensors", f"{cls}/model.safetensors")
        w.put(gen / "config.json", f"{cls}/config.json")
        run_cfg = {}
        if run != gen and (run / "config.json").is_file():
            w.put(run / "config.json", f"{cls}/run_config.json")
            run_cfg = read_json(run / "config.json")
        elif (gen / "run_config.json").is_file():
            w.put(gen / "run_config.json", f"{cls}/run_config.json")
            run_cfg = read_json(gen / "run_config.json")
        grids = sorted((run / "samples").glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name)) \
            if (run / "samples").is_dir() else []
        if grids:
            w.put(grids[-1], f"{cls}/samples.png")
        else:
            w.maybe(gen / "samples.png", f"{cls}/samples.png")
        cfg = read_json(gen / "config.json")
        info["classes"][cls] = {"run": run.name, "run_config": run_cfg, "params": _n_params(gen / "model.safetensors"),
                                "config": {k: cfg[k] for k in ("name", "arch", "z_dim", "image_size", "classes")
                                           if k in cfg}}


def _n_params(path: Path) -> int | None:
    """Number of values stored in a safetensors file (read from its header; nothing executed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception:  # noqa: BLE001 - a corrupt file is reported when it is loaded, not here
        return None


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _stage_classifier(root: Path, w: _Writer, info: dict) -> None:
    w.put(root / "model.safetensors", "model.safetensors")
    w.put(root / "config.json", "config.json")
    w.maybe(root / "confusion_matrix.png", "confusion_matrix.png")
    info["config"] = read_json(root / "config.json")


def _stage_evaluation(root: Path, w: _Writer, info: dict) -> None:
    for p in sorted(root.glob("*.png")):
        w.put(p, p.name)


def _stage_dataset(root: Path, w: _Writer, info: dict, max_per_folder: int, progress: bool) -> None:
    cols, rows = read_metadata(root / "metadata.csv")
    if not rows:
        raise UserError(f"{root / 'metadata.csv'} lists no images")
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        rel = safe_relpath(r["file_name"], "metadata.csv")
        if rel.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"metadata.csv lists {r['file_name']!r}: only PNG/JPEG/BMP images can be pushed")
        if not (root / rel).is_file():
            raise UserError(f"metadata.csv lists {r['file_name']!r} but {root / rel} does not exist")
        label = r["label"].strip()
        if not label or "/" in label or "\\" in label or label.startswith("."):
            raise UserError(f"metadata.csv has an unusable label {r['label']!r} for {r['file_name']!r}")
        by_label.setdefault(label, []).append(r)
    out_rows, used, seen = [], set(), {k: 0 for k in by_label}
    for r in tqdm(rows, desc="staging images", unit="img", disable=not progress):  # keeps the row order
        label = r["label"].strip()
        i, seen[label] = seen[label], seen[label] + 1
        folder = f"{label}/{i // max_per_folder:04d}" if len(by_label[label]) > max_per_folder else label
        name = stem = Path(r["file_name"].replace("\\", "/")).name
        n = 1
        while f"{folder}/{name}" in used:
            name, n = f"{Path(stem).stem}_{n}{Path(stem).suffix}", n + 1
        used.add(f"{folder}/{name}")
        w.put(root / safe_relpath(r["file_name"], "metadata.csv"), f"{folder}/{name}")
        out_rows.append({**r, "file_name": f"{folder}/{name}"})
    write_metadata(w.dest / "metadata.csv", cols, out_rows)
    w.files.append("metadata.csv")
    info["counts"] = {k: len(v) for k, v in sorted(by_label.items(), key=lambda kv: _class_order(kv[0]))}
    info["columns"] = cols
    info["sharded"] = any(len(v) > max_per_folder for v in by_label.values())
    gens: dict[str, set] = {}
    for r in rows:
        if r.get("generator_sha256"):
            gens.setdefault(r["label"].strip(), set()).add(r["generator_sha256"])
    info["generators"] = {k: sorted(v) for k, v in gens.items()}
    info["seeds"] = sorted({r["seed"] for r in rows if r.get("seed")})
    for side in ("generation.json", "config.json"):
        if (root / side).is_file():
            info["generation"] = read_json(root / side)
            w.put(root / side, side)
            break


def _class_order(label: str) -> tuple[int, str]:
    return (CLASSES.index(label) if label in CLASSES else len(CLASSES), label)


def stage(root: str | Path, dest: str | Path, *, kind: str | None = None, eval_dir: str | Path | None = None,
          link: bool = False, max_per_folder: int = MAX_PER_FOLDER, progress: bool = True) -> Staged:
    """Write the repo layout for ``root`` into the (existing, empty) folder ``dest``."""
    root, dest = Path(root), Path(dest)
    kind = kind or detect_kind(root)
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    w, info = _Writer(dest, link), {}
    if kind == "dataset":
        if eval_dir is not None:
            raise UserError("--eval applies to model repos; push the evaluation run on its own or with the GAN")
        _stage_dataset(root, w, info, max_per_folder, progress)
    else:
        {"gan": _stage_gan, "classifier": _stage_classifier, "evaluation": _stage_evaluation}[kind](root, w, info)
        _results(w, root, Path(eval_dir) if eval_dir else None, info)
    return Staged(kind=kind, repo_type="dataset" if kind == "dataset" else "model", files=w.files, info=info)
