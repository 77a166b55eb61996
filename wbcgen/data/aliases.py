"""Folder-name / label aliases → the five canonical classes.

The table is explicit and users extend it (``--alias NAME=class``). Names are matched
case-insensitively after dropping spaces, dashes, underscores and dots.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from classifiers.runtime import UserError

from .cellset import CLASSES

#: alias → class. Keys are already normalised (see :func:`normalise`).
ALIASES: dict[str, str] = {}
for _cls, _names in {
    "neutrophil": ["ne", "neu", "neut", "neutrophil", "neutrophils", "neutrophile", "neutrophiles",
                   "sne", "bne", "seg", "segmented", "segmentedneutrophil", "segmentedneutrophils",
                   "band", "bandneutrophil", "bandneutrophils", "neutrophilsegmented", "neutrophilband", "pmn",
                   "neutrophilgranulocyte", "neutrophilgranulocytes", "segmentedneutrophile"],
    "eosinophil": ["eo", "eos", "eosino", "eosinophil", "eosinophils", "eosinophile", "eosinophiles",
                   "eosinophilgranulocyte", "eosinophilgranulocytes"],
    "basophil": ["ba", "bas", "baso", "basophil", "basophils", "basophile", "basophiles",
                 "basophilgranulocyte", "basophilgranulocytes"],
    "lymphocyte": ["ly", "lym", "lymp", "lympho", "lymph", "lymphocyte", "lymphocytes"],
    "monocyte": ["mo", "mon", "mono", "monocyte", "monocytes"],
}.items():
    for _n in _names:
        ALIASES[_n] = _cls


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", str(name).strip().lower())


def resolve(name: str, extra: Mapping[str, str] | None = None) -> str | None:
    """The canonical class for ``name`` or ``None`` when it maps to no class."""
    key = normalise(name)
    if extra:
        for k, v in extra.items():
            if normalise(k) == key:
                return v
    return ALIASES.get(key)


def parse_mapping(items: Iterable[str] | None, flag: str = "--alias") -> dict[str, str]:
    """Parse ``["A=neutrophil,B=basophil", "C=mono"]`` into ``{"A": "neutrophil", ...}``.

    Targets may themselves be aliases (``mono``); they must resolve to one of the five classes.
    """
    out: dict[str, str] = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise UserError(f"{flag} expects NAME=CLASS pairs, got {part!r}")
            name, target = (s.strip() for s in part.split("=", 1))
            cls = target.lower() if target.lower() in CLASSES else ALIASES.get(normalise(target))
            if not name or cls is None:
                raise UserError(f"{flag} {part!r}: {target!r} is not one of {', '.join(CLASSES)}")
            out[name] = cls
    return out
