"""``push`` (wbcgen.hub.push): stage the exact repo layout (card + manifest included), then upload it — or,
with ``dry_run``, write that same layout to a local folder and upload nothing."""
from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from classifiers.runtime import UserError, atomic_write_json, atomic_write_text, run_lock
from wbcgen import __version__
from wbcgen.outputs import is_empty, output_kind, refuse_overlap, remove_stub, swap_in, temp_dir

from .cards import SOURCES, detect_sources, render_card
from .errors import call_hub
from .layout import MAX_PER_FOLDER, Staged, stage

#: Above this many files, a dataset upload uses ``upload_large_folder`` where the installed
#: huggingface_hub still has it (newer releases stream large folders through ``upload_folder``).
LARGE_UPLOAD = 1_000
MANIFEST = "wbcgen.json"


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"{repo_id!r} is not a valid Hub repo id: use the form USER/NAME") from None
    if repo_id.count("/") != 1:
        raise UserError(f"{repo_id!r} is not a valid Hub repo id: use the form USER/NAME")
    return repo_id


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(staged: Staged, dest: Path, repo_id: str, source: str, license: str) -> dict:
    images = (".png", ".jpg", ".jpeg", ".bmp")
    hashed = [f for f in staged.files if staged.kind != "dataset" or not f.lower().endswith(images)]
    info = staged.info
    return {
        "format": "wbcgen-hub", "format_version": 1, "kind": staged.kind, "repo_type": staged.repo_type,
        "repo_id": repo_id, "wbcgen_version": __version__, "data_source": source, "license": license,
        "classes": list(info.get("classes") or info.get("counts") or []),
        **({"counts": info["counts"], "n_images": sum(info["counts"].values())} if "counts" in info else {}),
        "sha256": {f: sha256_file(dest / f) for f in sorted(hashed)},
    }


def _source(staged: Staged, data_source: str, warn: Callable[[str], None]) -> str:
    if data_source != "auto":
        if data_source not in SOURCES:
            raise UserError(f"--data-source must be one of auto, {', '.join(SOURCES)}; got {data_source!r}")
        return data_source
    info = staged.info
    found = detect_sources([c.get("run_config") for c in (info.get("classes") or {}).values()],
                           info.get("config"), info.get("generation"), info.get("results"),
                           info.get("evaluation"))
    if found:
        return found[0]
    warn("No training-data source is recorded in this folder; assuming PBC (wbcgen's default data) "
         "and adding its CC BY 4.0 attribution. Use --data-source to change.")
    return "pbc"


def build(run_dir: Path, dest: Path, *, repo_id: str, kind: str | None = None, eval_dir: Path | None = None,
          license: str | None = None, data_source: str = "auto", link: bool = False,
          max_per_folder: int = MAX_PER_FOLDER, progress: bool = True,
          warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Staged:
    """Write the complete repo (files, README.md card, wbcgen.json) into the empty folder ``dest``."""
    staged = stage(run_dir, dest, kind=kind, eval_dir=eval_dir, link=link, max_per_folder=max_per_folder,
                   progress=progress)
    source = _source(staged, data_source, warn)
    license = license or SOURCES[source]["license"]
    atomic_write_text(dest / "README.md", render_card(staged, repo_id=repo_id, license=license, source=source))
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
         commit_message: str | None = None) -> dict:
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
    opts = dict(repo_id=repo_id, kind=kind, eval_dir=eval_dir, license=license, data_source=data_source,
                max_per_folder=max_per_folder, progress=progress)
    if dry_run:
        out = Path(to)
        refuse_overlap(out, "--to", {"RUN_DIR": run_dir, "--eval": eval_dir})
        check_out(out, overwrite, "--to", "push-dry-run")
        existed = out.exists()
        try:
            with run_lock(out):
                check_out(out, overwrite, "--to", "push-dry-run")
                tmp = temp_dir(out)
                try:
                    staged = build(run_dir, tmp, **opts)  # its wbcgen.json marks it as ours
                    swap_in(tmp, out)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            remove_stub(out, existed)
            raise
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
    large = len(staged.files) > LARGE_UPLOAD and hasattr(api, "upload_large_folder") and not _streams_large_folders()
    if large:
        call_hub(lambda: api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type=rt,
                                                 revision=revision, private=True if private else None),
                 action="push to", **hub)
        return f"{repo_id}@{revision or 'main'}"
    info = call_hub(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=rt,
                                              revision=revision, commit_message=message),
                    action="push to", **hub)
    return str(getattr(info, "commit_url", None) or info)
