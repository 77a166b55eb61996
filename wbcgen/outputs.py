"""What a command may delete or replace, and how it writes a whole output at once.

Rules (README "Safety rules"): a command deletes or replaces only a folder it recognises as its
own output (:func:`output_kind`), never one that equals or contains one of its inputs, or lies
inside one (:func:`refuse_overlap`), and never outside its ``--out``. Folder outputs are built in a
temp folder beside ``--out`` (:func:`temp_dir`) and renamed into place (:func:`swap_in`); temp
folders of processes that died are removed on the next run (:func:`clean_stale_temps`; an older
``wbcgen sample``'s per-class ones inside ``--out``: :func:`clean_legacy_temps`).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
from pathlib import Path

from classifiers.runtime import LOCK_NAME, UserError, atomic_write_json, run_lock
from classifiers.safety import _pid_alive

MARKER = ".wbcgen-output.json"  # written into download / push --dry-run outputs (hidden: never data, never pushed)
SAMPLE_HEADER = ["file_name", "label", "seed", "index", "generator_sha256"]
_TMP = re.compile(r"^\.(?P<name>.+)\.wbcgen-tmp-(?P<pid>\d+)$")
# per-class temp folders of an older `wbcgen sample` (tempfile.mkdtemp(prefix=".<class>.", dir=out))
_OLD_TMP = re.compile(r"^\.(?P<cls>[a-z]+)\.[a-z0-9_]{8}$")
_PNG = b"\x89PNG\r\n\x1a\n"


def plain_name(name: str, flag: str) -> str:
    """A single folder name: no separators, not ``.``/``..``, not absolute, not hidden."""
    text = str(name)
    if (not text.strip() or "/" in text or "\\" in text or text in (".", "..") or text.startswith(".")
            or os.path.isabs(text) or "\0" in text):
        raise UserError(f"{flag} must be one plain folder name (no '/', '\\', '..' or leading '.'), got {text!r}")
    if len(os.fsencode(text)) > 200:
        raise UserError(f"{flag} is {len(os.fsencode(text))} bytes long; use a name of at most 200 bytes")
    return text


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are the same folder or one lies inside the other."""
    ra, rb = _resolved(a), _resolved(b)
    return ra == rb or ra.is_relative_to(rb) or rb.is_relative_to(ra)


def refuse_overlap(out: str | os.PathLike, out_flag: str, inputs: dict[str, str | os.PathLike | None]) -> None:
    """UserError when the output folder equals, contains or lies inside one of the inputs."""
    for flag, src in inputs.items():
        if src is None or not str(src):
            continue
        if overlaps(out, src):
            ro, rs = _resolved(out), _resolved(src)
            how = "is" if ro == rs else ("contains" if rs.is_relative_to(ro) else "lies inside")
            raise UserError(f"{out_flag} {out} {how} the input {flag} {src}; write the output to a separate folder")


def _json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def sample_header_ok(folder: Path) -> bool:
    try:
        with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None) == SAMPLE_HEADER
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def output_kind(folder: str | os.PathLike) -> str | None:
    """Which wbcgen output ``folder`` is (``gan-run``, ``classifier-run``, ``evaluation``,
    ``synthetic-dataset``, ``review-kit``, or the marker's kind), or None."""
    p = Path(folder)
    if not p.is_dir():
        return None
    marker = _json(p / MARKER)
    if marker.get("kind"):
        return str(marker["kind"])
    cfg = _json(p / "config.json")
    if cfg.get("kind") == "wbcgen-gan-run":
        return "gan-run"
    if isinstance(cfg.get("model"), str) and "recipe" in cfg and "classes" in cfg:
        return "classifier-run"
    if _json(p / "generation.json").get("kind") == "wbcgen-synthetic-dataset" or sample_header_ok(p):
        return "synthetic-dataset"
    if _json(p / "results.json").get("schema", "").startswith("wbcgen.evaluation"):
        return "evaluation"
    if (p / "kit.json").is_file() and (p / "key.csv").is_file():
        return "review-kit"
    if _json(p / "wbcgen.json").get("format") == "wbcgen-hub":
        return "hub-layout"
    return None


def is_empty(folder: Path) -> bool:
    """No entries except our own lock / marker (and nothing hidden of ours)."""
    return folder.is_dir() and all(e.name in (LOCK_NAME, MARKER) for e in folder.iterdir())


def write_marker(folder: Path, kind: str, **info) -> None:
    atomic_write_json(folder / MARKER, {"kind": kind, **info})


def temp_dir(out: Path) -> Path:
    """A fresh temp folder beside ``out`` named after this process (``.<name>.wbcgen-tmp-<pid>``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    tmp = out.parent / f".{out.name}.wbcgen-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def clean_stale_temps(out: Path) -> list[Path]:
    """Remove temp folders for ``out`` left by processes that no longer run."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for e in out.parent.iterdir():
        m = _TMP.match(e.name)
        if m and m["name"] == out.name and e.is_dir() and not e.is_symlink() and not _pid_alive(int(m["pid"])):
            shutil.rmtree(e, ignore_errors=True)
            removed.append(e)
    return removed


def clean_legacy_temps(out: Path) -> list[Path]:
    """Remove the per-class temp folders ``.<class>.XXXXXXXX`` that an interrupted older
    ``wbcgen sample`` left inside its ``--out``: only folders with exactly that name (a known
    class, 8 ``mkdtemp`` characters) holding nothing but that class's ``<class>_NNNNNN.png``
    files (PNG or empty, as a killed write leaves them). Anything else — another file, a
    subfolder, a link — keeps the folder untouched (``sample`` then refuses ``--out``, naming it)."""
    removed = []
    if out.is_symlink() or not out.is_dir():
        return removed
    for e in sorted(out.iterdir()):
        if not is_legacy_temp(e):
            continue
        try:
            for f in list(e.iterdir()):
                f.unlink()
            e.rmdir()
        except OSError:
            continue
        removed.append(e)
    return removed


def is_legacy_temp(e: Path) -> bool:
    """True for an older ``wbcgen sample``'s per-class temp folder (see :func:`clean_legacy_temps`)."""
    from wbcgen.data import CLASSES

    m = _OLD_TMP.match(e.name)
    if not m or m["cls"] not in CLASSES or e.is_symlink() or not e.is_dir():
        return False
    own = re.compile(rf"^{m['cls']}_\d{{6}}\.png$")
    try:
        return all(own.match(f.name) and f.is_file() and not f.is_symlink() and _png_or_empty(f)
                   for f in e.iterdir())
    except OSError:
        return False


def _png_or_empty(f: Path) -> bool:
    with open(f, "rb") as fh:
        head = fh.read(8)
    return head == b"" or head == _PNG


def swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``. An existing ``out`` (already checked to be ours) is
    moved aside first and removed only after the rename succeeded; a lock held in ``out`` moves
    along, so the folder stays locked."""
    if (out / LOCK_NAME).is_file() and not (tmp / LOCK_NAME).exists():
        shutil.copyfile(out / LOCK_NAME, tmp / LOCK_NAME)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.wbcgen-old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_output(out: Path, check=None):
    """Whole or nothing: lock ``out``, run ``check()`` (now that no other writer can change
    ``out``), yield a fresh temp folder beside it and rename that into place when the block
    ends without error. On any failure the temp folder and a stub this call made are removed."""
    existed = out.exists()
    try:
        with run_lock(out):
            clean_legacy_temps(out)  # an older wbcgen's leftovers inside out (only ever its own)
            if check is not None:
                check()
            tmp = temp_dir(out)
            try:
                yield tmp
                swap_in(tmp, out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        remove_stub(out, existed)
        raise


def remove_stub(folder: Path, existed: bool) -> None:
    """After a failed start: remove ``folder`` if this run created it and it holds nothing but
    empty folders (and our lock); never touches a file of any other kind."""
    if existed or not folder.is_dir():
        return
    for d, subdirs, files in os.walk(folder):
        if any(f not in (LOCK_NAME, MARKER) for f in files):
            return
    for d, subdirs, files in sorted(os.walk(folder, topdown=False), key=lambda t: -len(t[0])):
        for f in files:
            (Path(d) / f).unlink(missing_ok=True)
        try:
            os.rmdir(d)
        except OSError:
            return
