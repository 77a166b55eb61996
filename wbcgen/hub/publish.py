"""``push`` (wbcgen.hub.push): stage the exact repo layout (card + manifest included), then upload it — or,
with ``dry_run``, write that same layout to a local folder and upload nothing."""
from __future__ import annotations

import fnmatch
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from classifiers.runtime import UserError, atomic_write_json, atomic_write_text
from wbcgen import __version__
from wbcgen.data import CLASSES
from wbcgen.outputs import is_empty, output_kind, refuse_overlap, staged_output

from .cards import SOURCES, detect_sources, render_card
from .errors import call_hub
from .layout import MAX_PER_FOLDER, Staged, read_json, stage

#: Above this many files, a dataset upload uses ``upload_large_folder`` where the installed
#: huggingface_hub still has it (newer releases stream large folders through ``upload_folder``).
LARGE_UPLOAD = 1_000
MANIFEST = "wbcgen.json"
#: Files whose content is pinned by sha256 in wbcgen.json: weights, configs, metadata.csv,
#: results.json. Cards (README.md), HTML reports and figures may be edited on the Hub.
HASHED_SUFFIXES = (".safetensors", ".json", ".csv")
#: Names wbcgen writes at a repo's root; a re-push deletes them when it no longer has them.
OWN_FILES = ("metadata.csv", "generation.json", "train_images.csv", "results.json", "report.html",
             "confusion_matrix.png", "evaluation/*")


def is_hashed(rel: str) -> bool:
    """Whether ``rel`` must not change after the push (checked by download and the loaders)."""
    return rel.lower().endswith(HASHED_SUFFIXES) and rel != MANIFEST


def open_up(folder: Path) -> None:
    """Give a folder made by mkdtemp (mode 0700) the mode a plain mkdir would (the umask)."""
    from classifiers.runtime import _umask_mode

    mode = _umask_mode()
    os.chmod(folder, mode | (mode & 0o444) >> 2)


def check_repo_id(repo_id: str, flag: str = "") -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    what = f"{flag} {repo_id!r}" if flag else repo_id.__repr__()
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"{what} is not a valid Hub repo id: use the form USER/NAME") from None
    if repo_id.count("/") != 1:
        raise UserError(f"{what} is not a valid Hub repo id: use the form USER/NAME")
    return repo_id


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(staged: Staged, dest: Path, repo_id: str, source: str, license: str) -> dict:
    hashed = [f for f in staged.files if is_hashed(f)]
    info = staged.info
    return {
        "format": "wbcgen-hub", "format_version": 1, "kind": staged.kind, "repo_type": staged.repo_type,
        "repo_id": repo_id, "wbcgen_version": __version__, "data_source": source, "license": license,
        "classes": list(info.get("gan_classes") or info.get("classes") or info.get("counts") or []),
        **({"counts": info["counts"], "n_images": sum(info["counts"].values())} if "counts" in info else {}),
        "sha256": {f: sha256_file(dest / f) for f in sorted(hashed)},
        "editable": sorted(f for f in staged.files if not is_hashed(f) and "/" not in f),
        **({"files": sorted(staged.files)} if staged.kind != "dataset" else {}),
    }


def _provenance(info: dict) -> tuple[str | None, str | None]:
    """(source, licence) recorded in a dataset's generation.json, or a UserError naming what is missing."""
    gen = info.get("generation") or {}
    gens = gen.get("generators") if gen.get("kind") == "wbcgen-synthetic-dataset" else None
    if not isinstance(gens, dict) or not gens:
        raise UserError("this dataset has no generation.json provenance (written by `wbcgen sample`), so its "
                        "training data and licence are unknown; pass --data-source pbc|zheng2018|bccd|other "
                        "(and --license ID)")
    sources = {c: (g or {}).get("data_source") for c, g in gens.items()}
    if None in sources.values():
        missing = ", ".join(c for c, s in sources.items() if s is None)
        raise UserError(f"generation.json records no training-data source for {missing}; pass --data-source "
                        f"pbc|zheng2018|bccd|other (and --license ID)")
    if len(set(sources.values())) > 1:
        raise UserError(f"the generators were trained on different data ({', '.join(sorted(set(sources.values())))}); "
                        f"pass --data-source and --license for the card")
    licences = {(g or {}).get("license") for g in gens.values()}
    source = next(iter(sources.values()))
    return (source if source in SOURCES else "other"), (licences.pop() if len(licences) == 1 else None)


def _source(staged: Staged, data_source: str, warn: Callable[[str], None]) -> tuple[str, str | None]:
    """(source, licence or None) for the card: ``--data-source``, else the provenance recorded in
    the folder; never a guess."""
    if data_source != "auto":
        if data_source not in SOURCES:
            raise UserError(f"--data-source must be one of auto, {', '.join(SOURCES)}; got {data_source!r}")
        return data_source, None
    info = staged.info
    if staged.kind == "dataset":
        return _provenance(info)
    found = detect_sources([c.get("run_config") for c in (info.get("classes") or {}).values()],
                           info.get("config"), info.get("results"), info.get("evaluation"))
    if len(found) == 1:
        return found[0], None
    if found:
        raise UserError(f"this {staged.kind} mentions several training-data sources ({', '.join(found)}); pass "
                        f"--data-source and --license for the card")
    raise UserError(f"no training-data source is recorded in this {staged.kind} run; pass --data-source "
                    f"pbc|zheng2018|bccd|other (and --license ID)")


def build(run_dir: Path, dest: Path, *, repo_id: str, kind: str | None = None, eval_dir: Path | None = None,
          license: str | None = None, data_source: str = "auto", link: bool = False,
          max_per_folder: int = MAX_PER_FOLDER, progress: bool = True, hub_dataset: str | None = None,
          base_model: str | None = None,
          warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Staged:
    """Write the complete repo (files, README.md card, wbcgen.json) into the empty folder ``dest``."""
    staged = stage(run_dir, dest, kind=kind, eval_dir=eval_dir, link=link, max_per_folder=max_per_folder,
                   progress=progress)
    source, recorded = _source(staged, data_source, warn)
    license = license or recorded or SOURCES[source]["license"]
    atomic_write_text(dest / "README.md", render_card(staged, repo_id=repo_id, license=license, source=source,
                                                         hub_dataset=hub_dataset, base_model=base_model))
    staged.files.append("README.md")
    atomic_write_json(dest / MANIFEST, _manifest(staged, dest, repo_id, source, license))
    staged.files.append(MANIFEST)
    staged.info["data_source"], staged.info["license"] = source, license
    return staged


def check_out(out: Path, overwrite: bool, flag: str, kind: str) -> None:
    """``out`` may be missing or empty; with ``overwrite`` it may also be an earlier output of this
    command (recognised by its marker). Anything else is refused and left alone."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{flag} {out} exists and is not a folder; choose another {flag}")
    if not out.is_dir() or is_empty(out):
        return
    found = output_kind(out)
    if found != kind and not (kind == "push-dry-run" and found == "hub-layout"):
        raise UserError(f"{flag} {out} is not empty and is not an earlier wbcgen {kind} output, so it is left "
                        f"alone; choose an empty or new {flag}")
    if not overwrite:
        raise UserError(f"{flag} {out} already holds an earlier wbcgen {kind} output; pass --overwrite to replace it")


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         dry_run: bool = False, to: str | Path | None = None, overwrite: bool = False,
         eval_dir: str | Path | None = None, license: str | None = None, data_source: str = "auto",
         kind: str | None = None, max_per_folder: int = MAX_PER_FOLDER, api: Any = None,
         sleep: Callable[[float], None] | None = None, progress: bool = True,
         commit_message: str | None = None, hub_dataset: str | None = None, base_model: str | None = None) -> dict:
    """Push a GAN run (or a folder of per-class runs), a classifier run, a generated dataset or
    an evaluation run. Returns ``{kind, repo_type, repo_id, files, path | commit_url}``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder")
    check_repo_id(repo_id)
    if to is not None and not dry_run:
        raise UserError("--to only works with --dry-run (it writes the repo layout locally)")
    if dry_run and to is None:
        raise UserError("--dry-run needs --to DIR, the folder that receives the repo layout")
    eval_dir = Path(eval_dir) if eval_dir else None
    for flag, value in (("--hub-dataset", hub_dataset), ("--base-model", base_model)):
        if value:
            check_repo_id(value, flag)
    opts = dict(repo_id=repo_id, kind=kind, eval_dir=eval_dir, license=license, data_source=data_source,
                max_per_folder=max_per_folder, progress=progress, hub_dataset=hub_dataset, base_model=base_model)
    if dry_run:
        out = Path(to)
        refuse_overlap(out, "--to", {"RUN_DIR": run_dir, "--eval": eval_dir})
        check_out(out, overwrite, "--to", "push-dry-run")
        with staged_output(out, lambda: check_out(out, overwrite, "--to", "push-dry-run")) as tmp:
            staged = build(run_dir, tmp, **opts)  # its wbcgen.json marks it as ours
        return {"kind": staged.kind, "repo_type": staged.repo_type, "repo_id": repo_id, "path": str(out),
                "files": sorted(staged.files), "dry_run": True}
    with tempfile.TemporaryDirectory(prefix="wbcgen-push-") as tmp:
        staged = build(run_dir, Path(tmp), link=True, **opts)
        url = upload(Path(tmp), repo_id, staged, private=private, revision=revision, api=api, sleep=sleep,
                     commit_message=commit_message)
    return {"kind": staged.kind, "repo_type": staged.repo_type, "repo_id": repo_id, "files": sorted(staged.files),
            "commit_url": url, "dry_run": False}


def _streams_large_folders() -> bool:
    import importlib.util

    return importlib.util.find_spec("huggingface_hub._upload_pipeline") is not None


def upload(folder: Path, repo_id: str, staged: Staged, *, private: bool = False, revision: str | None = None,
           api: Any = None, sleep: Callable[[float], None] | None = None, commit_message: str | None = None) -> str:
    """Create the repo (and branch) if needed and upload ``folder``; Hub errors → one sentence."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()  # token: HF_TOKEN or the login cache, resolved by huggingface_hub
    rt = staged.repo_type
    hub = dict(repo_id=repo_id, repo_type=rt, revision=revision, sleep=sleep)
    call_hub(lambda: api.create_repo(repo_id, repo_type=rt, private=True if private else None, exist_ok=True),
             action="create", **hub)
    if revision and revision != "main":
        call_hub(lambda: api.create_branch(repo_id, repo_type=rt, branch=revision, exist_ok=True),
                 action="push to", **hub)
    message = commit_message or f"wbcgen {__version__}: push {staged.kind}"
    stale = stale_patterns(staged, read_json(folder / MANIFEST), _remote_manifest(api, repo_id, rt, revision))
    large = len(staged.files) > LARGE_UPLOAD and hasattr(api, "upload_large_folder") and not _streams_large_folders()
    if large:
        call_hub(lambda: api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type=rt,
                                                 revision=revision, private=True if private else None),
                 action="push to", **hub)
        kept = set(staged.files)
        remote = call_hub(lambda: api.list_repo_files(repo_id, repo_type=rt, revision=revision),
                          action="push to", **hub)
        old = [f for f in remote if f not in kept and any(fnmatch.fnmatch(f, p) for p in stale)]
        if old:
            call_hub(lambda: api.delete_files(repo_id, delete_patterns=old, repo_type=rt, revision=revision,
                                              commit_message=f"wbcgen {__version__}: remove stale files"),
                     action="push to", **hub)
        return f"{repo_id}@{revision or 'main'}"
    info = call_hub(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=rt,
                                              revision=revision, commit_message=message, delete_patterns=stale),
                    action="push to", **hub)
    return str(getattr(info, "commit_url", None) or info)


def _remote_manifest(api: Any, repo_id: str, repo_type: str, revision: str | None) -> dict:
    """The wbcgen.json already on the Hub (what the previous push wrote), or {} (new repo, none)."""
    try:
        path = api.hf_hub_download(repo_id=repo_id, filename=MANIFEST, repo_type=repo_type, revision=revision)
        return read_json(Path(path))
    except Exception:  # noqa: BLE001 - no previous manifest: nothing of ours to clean up
        return {}


def stale_patterns(staged: Staged, new: dict, old: dict) -> list[str]:
    """``delete_patterns`` for a re-push: every class folder (the classes of the previous and this
    wbcgen.json, and wbcgen's five), every file the previous push listed and wbcgen's own root
    files. upload_folder keeps the files this push uploads, so only stale ones go."""
    pats: set[str] = set(OWN_FILES)
    if staged.kind in ("gan", "dataset"):
        classes = set(new.get("classes") or []) | set(old.get("classes") or []) | set(CLASSES)
        pats |= {f"{c}/*" for c in classes if isinstance(c, str) and c and "/" not in c and "*" not in c}
    for f in list(old.get("files") or []) + list(old.get("sha256") or {}) + list(old.get("editable") or []):
        if isinstance(f, str) and f and not f.startswith("/") and ".." not in f.split("/"):
            pats.add(f)
    return sorted(pats)
