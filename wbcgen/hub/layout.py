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
  ``<class>/<shard>/<file>`` when a class has ``max_per_folder`` files or more; shards hold
  half that many).

Only regular files that resolve inside the pushed folder are staged (a symlink pointing out
of it is refused), and every image must start with the magic bytes of PNG, JPEG, BMP or TIFF.
A GAN repo carries each generator's training list (``<folder>/train_images.csv``) and a
dataset repo ``generation.json`` + ``train_images.csv`` (see :mod:`.lists`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from classifiers.runtime import UserError, atomic_write_text
from wbcgen.data import CLASSES

from .lists import scrub_run_config, stage_dataset_lists, stage_gan_list

#: The image files wbcgen pushes, downloads and writes (a parquet download keeps TIFF as .tif):
#: one set for every side, so that whatever a download writes can be pushed again.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: The only file types wbcgen ever downloads, copies out of a snapshot or pushes.
SAFE_SUFFIXES = (".safetensors", ".json", *IMAGE_SUFFIXES, ".csv", ".md", ".html")
SAFE_PATTERNS = [f"*{s}" for s in SAFE_SUFFIXES] + [f"*{s.upper()}" for s in IMAGE_SUFFIXES]
#: A folder on the Hub must hold fewer files than this; larger classes are sharded.
MAX_PER_FOLDER = 10_000
#: Leading bytes of the image formats wbcgen pushes and downloads.
IMAGE_MAGIC = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "BMP": (b"BM",),
               "TIFF": (b"II*\x00", b"MM\x00*")}
#: The index file at the root of a GAN repo (class -> subfolder); see :func:`gan_index`.
GAN_INDEX = "config.json"
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


def image_format(path: Path) -> str | None:
    """``PNG`` | ``JPEG`` | ``BMP`` | ``TIFF`` from the file's first bytes, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((k for k, magics in IMAGE_MAGIC.items() if head.startswith(magics)), None)


def check_image(path: Path, name: str) -> None:
    if image_format(path) is None:
        raise UserError(f"{name} is not a PNG, JPEG, BMP or TIFF image (its first bytes say otherwise); refusing it")


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of ``roots``."""
    real = Path(os.path.realpath(path))
    return any(real == r or real.is_relative_to(r) for r in (Path(os.path.realpath(x)) for x in roots))


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
    def __init__(self, dest: Path, link: bool, roots: list[Path]):
        self.dest, self.link, self.files, self.roots = dest, link, [], roots

    def put(self, src: Path, rel: str) -> None:
        if not is_safe(rel):
            raise UserError(f"refusing to push {rel}: only {', '.join(SAFE_SUFFIXES)} files are allowed")
        if not inside(src, self.roots):
            raise UserError(f"refusing to push {src}: it is a symlink to {os.path.realpath(src)}, outside the "
                            f"folder being pushed")
        if rel.lower().endswith(IMAGE_SUFFIXES):
            check_image(src, str(src))
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
            run_cfg = scrub_run_config(w.dest / cls / "run_config.json")
        elif (gen / "run_config.json").is_file():
            w.put(gen / "run_config.json", f"{cls}/run_config.json")
            run_cfg = scrub_run_config(w.dest / cls / "run_config.json")
        grids = sorted((run / "samples").glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name)) \
            if (run / "samples").is_dir() else []
        if grids:
            w.put(grids[-1], f"{cls}/samples.png")
        else:
            w.maybe(gen / "samples.png", f"{cls}/samples.png")
        cfg = read_json(gen / "config.json")
        train = stage_gan_list(gen, run, run_cfg, w.dest, cls, w.files)
        info["classes"][cls] = {"run": run.name, "run_config": run_cfg, "params": _n_params(gen / "model.safetensors"),
                                "config": {k: cfg[k] for k in ("name", "arch", "z_dim", "image_size", "classes", "members")
                                           if k in cfg and (k != "members" or cfg[k] > 1)}, "train_images": train}
    # a conditional model ("all/") makes each of its classes
    folders = {c: folder for folder in runs for c in (info["classes"][folder]["config"].get("classes") or [folder])
               if folder == "all" or c == folder}
    info["gan_classes"] = [c for c in CLASSES if c in folders]  # the classes made (manifest "classes")
    atomic_write_text(w.dest / GAN_INDEX, json.dumps(gan_index(folders), indent=2) + "\n")
    w.files.append(GAN_INDEX)


def gan_index(classes: "list[str] | dict[str, str]") -> dict:
    """The root ``config.json`` of a GAN repo: which subfolder holds which class's generator
    (one entry point for loaders, and the file the Hub counts downloads by). ``classes``: class
    names (subfolder = class) or class -> subfolder (a conditional model: every class -> ``all``)."""
    folders = classes if isinstance(classes, dict) else {c: c for c in classes}
    return {"kind": "wbcgen-gan-repo", "library_name": "wbcgen", "model_class": "wbcgen.gan.Generator",
            "classes": folders,
            "load": "wbcgen.hub.load_generator_from_hub(repo_id, cls) or Generator.from_pretrained(<snapshot>/<cls>)"}


def _n_params(path: Path) -> int | None:
    """Number of values stored in a safetensors file (read from its header; nothing executed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return sum(math.prod(int(d) for d in f.get_slice(k).get_shape()) for k in f.keys())
    except Exception:  # noqa: BLE001 - a corrupt file is reported when it is loaded, not here
        return None


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
            raise UserError(f"metadata.csv lists {r['file_name']!r}: only PNG/JPEG/BMP/TIFF images can be pushed")
        if not (root / rel).is_file():
            raise UserError(f"metadata.csv lists {r['file_name']!r} but {root / rel} does not exist")
        label = r["label"].strip()
        if not label or "/" in label or "\\" in label or label.startswith("."):
            raise UserError(f"metadata.csv has an unusable label {r['label']!r} for {r['file_name']!r}")
        by_label.setdefault(label, []).append(r)
    out_rows, used, seen = [], set(), {k: 0 for k in by_label}
    shard = shard_size(max_per_folder)
    for r in tqdm(rows, desc="staging images", unit="img", disable=not progress):  # keeps the row order
        label = r["label"].strip()
        i, seen[label] = seen[label], seen[label] + 1
        folder = f"{label}/{i // shard:04d}" if len(by_label[label]) >= max_per_folder else label
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
    info["sharded"] = any(len(v) >= max_per_folder for v in by_label.values())
    info["shard_size"], info["max_per_folder"] = shard, max_per_folder
    info["column_types"] = {c: _column_type(c, [r.get(c) for r in rows]) for c in cols if c != "file_name"}
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
    info["train_images"] = stage_dataset_lists(root, w.dest, w.files)


def shard_size(max_per_folder: int) -> int:
    """Files per shard of a sharded class: half the limit, so every folder stays below it."""
    return max(1, max_per_folder // 2)


def _column_type(col: str, values: list) -> str:
    """``class_label`` (label), ``int64`` (columns of integers, e.g. seed/index) or ``string``."""
    if col == "label":
        return "class_label"
    try:
        if values and all(v is not None and str(v).strip().lstrip("-").isdigit() for v in values):
            return "int64"
    except AttributeError:
        pass
    return "string"


def _class_order(label: str) -> tuple[int, str]:
    return (CLASSES.index(label) if label in CLASSES else len(CLASSES), label)


def stage(root: str | Path, dest: str | Path, *, kind: str | None = None, eval_dir: str | Path | None = None,
          link: bool = False, max_per_folder: int = MAX_PER_FOLDER, progress: bool = True) -> Staged:
    """Write the repo layout for ``root`` into the (existing, empty) folder ``dest``."""
    root, dest = Path(root), Path(dest)
    kind = kind or detect_kind(root)
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    roots = [root] + ([Path(eval_dir)] if eval_dir else [])
    w, info = _Writer(dest, link, roots), {}
    if kind == "dataset":
        if eval_dir is not None:
            raise UserError("--eval applies to model repos; push the evaluation run on its own or with the GAN")
        _stage_dataset(root, w, info, max_per_folder, progress)
    else:
        {"gan": _stage_gan, "classifier": _stage_classifier, "evaluation": _stage_evaluation}[kind](root, w, info)
        _results(w, root, Path(eval_dir) if eval_dir else None, info)
    return Staged(kind=kind, repo_type="dataset" if kind == "dataset" else "model", files=w.files, info=info)
