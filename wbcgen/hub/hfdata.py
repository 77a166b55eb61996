"""``--data hf://USER/NAME[@REVISION]``: a Hub dataset as a local folder, downloaded once.

The first use runs :func:`wbcgen.hub.download` into ``<cache>/hf/<user>--<name>@<revision>``;
later uses read that folder and never contact the Hub (so they work offline). The cache is
``$WBCGEN_CACHE``, else ``$XDG_CACHE_HOME/wbcgen``, else ``~/.cache/wbcgen``. Delete a folder
there to download it again (a branch such as ``main`` is not re-checked; pin a revision).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Mapping

from classifiers.runtime import UserError

SCHEME = "hf://"
_URI = re.compile(r"^hf://(?:datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@([^@\s]+))?/?$")


def is_hf_uri(path) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse(uri: str) -> tuple[str, str | None]:
    """``hf://owner/name@rev`` → ``("owner/name", "rev")`` (``hf://datasets/owner/name`` also accepted)."""
    m = _URI.match(uri.strip())
    if not m:
        raise UserError(f"{uri!r} is not a Hub dataset address; use hf://USER/NAME or hf://USER/NAME@REVISION")
    return m.group(1), m.group(2)


def cache_root() -> Path:
    base = os.environ.get("WBCGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "wbcgen")
    return Path(base) / "hf"


def folder_for(uri: str, label_map: Mapping[str, str] | None = None, aliases: Mapping[str, str] | None = None) -> Path:
    repo_id, rev = parse(uri)
    name = f"{repo_id.replace('/', '--')}@{(rev or 'main').replace('/', '~')}"
    mapping = {"label_map": dict(label_map or {}), "aliases": dict(aliases or {})}
    if mapping["label_map"] or mapping["aliases"]:  # another mapping lays the same repo out differently
        name += "-" + hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / name


def _complete(folder: Path) -> bool:
    # download() lays out into a temp folder and renames it into place: if the folder is there, it is whole
    return folder.is_dir() and any(folder.iterdir())


def resolve(uri: str, *, label_map: Mapping[str, str] | None = None, aliases: Mapping[str, str] | None = None,
            progress: bool = True) -> Path:
    """The local folder for ``uri``, downloading it on first use."""
    from .fetch import download

    folder = folder_for(uri, label_map, aliases)
    if _complete(folder):
        return folder
    repo_id, rev = parse(uri)
    try:
        download(repo_id, folder, revision=rev, label_map=label_map or None, aliases=aliases or None,
                 progress=progress)
    except UserError:
        if _complete(folder):  # another process finished the same download first
            return folder
        raise
    return folder
