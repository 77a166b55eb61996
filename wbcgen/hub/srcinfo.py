"""Where a downloaded dataset came from: the card's licence and citation, ``SOURCE.md`` and
``source.json`` (the provenance record written beside the images)."""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from classifiers.runtime import atomic_write_json, atomic_write_text

PROVENANCE = "source.json"
SOURCE_MD = "SOURCE.md"
_MAX_CITATION = 4000


def read_card(root: Path) -> tuple[dict, str]:
    """(YAML front matter, body) of ``root/README.md``; ``({}, "")`` when there is none.
    The YAML is read with ``safe_load`` (no tags, no code)."""
    import yaml

    path = root / "README.md"
    if not path.is_file():
        return {}, ""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    m = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*(?:\n|$)", text, re.S)
    if not m:
        return {}, text
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        meta = None
    return (meta if isinstance(meta, dict) else {}), text[m.end():]


def licence(meta: dict) -> str | None:
    lic = meta.get("license")
    if isinstance(lic, list):
        lic = ", ".join(str(x) for x in lic)
    lic = str(lic) if lic else None
    if lic == "other" and meta.get("license_name"):
        lic = f"other ({meta['license_name']})"
    return lic


def citation(body: str) -> str | None:
    """The text under a ``Citation`` heading of the card (or its first BibTeX block)."""
    lines = body.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(#{1,6})\s+.*\bcit(ation|ing|e)\b", line, re.I)
        if m:
            level, out = len(m.group(1)), []
            for nxt in lines[i + 1:]:
                h = re.match(r"^(#{1,6})\s", nxt)
                if h and len(h.group(1)) <= level:
                    break
                out.append(nxt)
            text = "\n".join(out).strip()
            if text:
                return text[:_MAX_CITATION]
    m = re.search(r"```(?:bibtex|bib)\s*\n(.*?)```", body, re.S | re.I)
    return m.group(1).strip()[:_MAX_CITATION] if m else None


def commit_of(src: Path) -> str | None:
    """The commit of a Hub cache snapshot folder (``.../snapshots/<commit>``)."""
    return src.name if src.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", src.name) else None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _table(counts_by_split: dict[str, dict[str, int]]) -> list[str]:
    splits = list(counts_by_split)
    classes = list(dict.fromkeys(c for d in counts_by_split.values() for c in d))
    out = ["| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    out += [f"| {c} | " + " | ".join(str(counts_by_split[s].get(c, 0)) for s in splits) + " |" for c in classes]
    return out


def write(out: Path, prov: dict) -> None:
    """``SOURCE.md`` (for people) and ``source.json`` (for tools) into ``out``."""
    atomic_write_json(out / PROVENANCE, prov)
    where = (f"the Hub dataset `{prov['repo_id']}` (revision `{prov.get('revision') or 'main'}`"
             + (f", commit `{prov['commit']}`" if prov.get("commit") else "") + ")"
             if prov.get("repo_id") else f"the local folder `{prov['source']}`")
    lines = ["# Source of these images", "",
             f"Laid out by `wbcgen download` on {prov['downloaded_at']} from {where}, "
             f"a {prov['format']} dataset ({prov.get('found_by', '')}).", "",
             f"**Licence** (from the dataset card): "
             f"{prov.get('license') or 'not stated in the card — check the source'}.",
             "Keep this file with the images and follow the licence and citation request of the source.", ""]
    if prov.get("citation"):
        lines += ["## Citation (from the dataset card)", "", prov["citation"], ""]
    lines += ["## What is here", "",
              "Images are the original bytes of the source (no re-encoding), named by their sha256; "
              "`metadata.csv` lists each with its class, split and source label.", ""]
    lines += _table(prov["counts_by_split"]) + [""]
    if prov.get("skipped_labels"):
        lines.append("Skipped (not one of wbcgen's five classes): "
                     + ", ".join(f"{k} {v}" for k, v in prov["skipped_labels"].items()) + ".")
    if prov.get("duplicates"):
        lines.append(f"Exact duplicates written once: {prov['duplicates']}.")
    if prov.get("n_unusable"):
        lines.append(f"Rows without a usable label or PNG/JPEG/BMP/TIFF image: {prov['n_unusable']} "
                     f"(listed with reasons in {PROVENANCE}).")
    if prov.get("max_per_class"):
        lines.append(f"Sample: at most {prov['max_per_class']} images per class and split "
                     "(the ones with the smallest sha256).")
    atomic_write_text(out / SOURCE_MD, "\n".join(lines).rstrip() + "\n")
