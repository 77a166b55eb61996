"""CellSet: the one in-memory form of every dataset, real or synthetic."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

import torch

#: The fixed class order (index 0..4) used everywhere in wbcgen and the papers.
CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")
#: class name -> wbcgen's label index (torchvision's ImageFolder numbers classes alphabetically instead).
CLASS_TO_IDX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}


@dataclass
class CellSet:
    """Images as a uint8 ``N×3×H×W`` tensor plus int64 labels indexing :data:`CLASSES`.

    ``manifest`` has one dict per image (``path``, ``label``, ``sha256``, ``orig_size``
    as ``[width, height]``); ``skipped`` lists files that were not loaded, each with a
    ``reason``; ``duplicates`` lists groups of paths with identical bytes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES
    manifest: list[dict] = field(default_factory=list)
    source: str = ""
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    preprocessing: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"CellSet.images must be uint8 N×3×H×W, got {tuple(self.images.shape)} {self.images.dtype}")
        self.labels = self.labels.to(torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError("CellSet.images and CellSet.labels differ in length")
        if self.manifest and len(self.manifest) != len(self.images):
            raise ValueError("CellSet.manifest must have one entry per image")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])  # type: ignore[return-value]

    def counts(self) -> dict[str, int]:
        """Images per class, every class listed (0 for absent ones)."""
        bc = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return {c: int(n) for c, n in zip(self.classes, bc)}

    def absent_classes(self) -> list[str]:
        return [c for c, n in self.counts().items() if n == 0]

    def present_classes(self) -> list[str]:
        """The classes with at least one image, in class order."""
        return [c for c, n in self.counts().items() if n > 0]

    def subset(self, index: Sequence[int] | torch.Tensor) -> "CellSet":
        idx = torch.as_tensor(index, dtype=torch.long)
        return CellSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=self.classes,
            manifest=[self.manifest[i] for i in idx.tolist()] if self.manifest else [],
            source=self.source,
            preprocessing=dict(self.preprocessing),
        )

    def of_class(self, name: str) -> "CellSet":
        if name not in self.classes:
            raise ValueError(f"unknown class {name!r}; expected one of {', '.join(self.classes)}")
        return self.subset(torch.nonzero(self.labels == self.classes.index(name)).flatten())

    def manifest_hash(self) -> str:
        """sha256 over the (sorted) image hashes, labels and the preprocessing settings."""
        h = hashlib.sha256()
        h.update(json.dumps(self.preprocessing, sort_keys=True).encode())
        for m in sorted(self.manifest, key=lambda m: (m.get("sha256", ""), m.get("label", ""))):
            h.update(f"{m.get('sha256','')}:{m.get('label','')}\n".encode())
        return h.hexdigest()

    @staticmethod
    def concat(sets: Sequence["CellSet"], source: str = "") -> "CellSet":
        if not sets:
            raise ValueError("nothing to concatenate")
        sizes = {s.image_size for s in sets}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate CellSets of different image sizes {sorted(sizes)}")
        return CellSet(
            images=torch.cat([s.images for s in sets]),
            labels=torch.cat([s.labels for s in sets]),
            classes=sets[0].classes,
            manifest=[m for s in sets for m in s.manifest] if all(s.manifest for s in sets) else [],
            source=source or "+".join(s.source for s in sets),
            preprocessing=dict(sets[0].preprocessing),
        )
