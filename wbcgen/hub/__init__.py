"""Hugging Face Hub integration: push runs and datasets (with cards), download released
datasets and models, and load generators/classifiers strictly from safetensors.

Public API (stable names other parts call):

* :func:`push` — GAN run(s), classifier run, generated dataset or evaluation run → Hub repo
  (``dry_run=True, to=DIR`` writes the exact repo layout locally and uploads nothing).
* :func:`download` — Hub repo id or local repo folder → class folders + ``metadata.csv``.
* :func:`resolve_generator_source` — ``sample --from``: repo id / path → local folder with
  ``<class>/model.safetensors + config.json``; :func:`resolve_generators` → ``{class: folder}``.
* :func:`load_generator_from_hub`, :func:`load_classifier_from_hub`, :func:`load_pretrained` —
  strict ``from_pretrained`` from safetensors + JSON only.
* :func:`detect_kind`, :func:`render_card`, :func:`validate_card`.
"""
from .cards import eval_summary, render_card, validate_card
from .fetch import (download, is_repo_id, lay_out, load_classifier_from_hub, load_generator_from_hub,
                       load_pretrained,
                       resolve_generator_source, resolve_generators, snapshot)
from .errors import HubError, call_hub, explain, redact
from .layout import MAX_PER_FOLDER, SAFE_PATTERNS, detect_kind, stage
from .publish import build, push, upload

__all__ = ["HubError", "MAX_PER_FOLDER", "SAFE_PATTERNS", "build", "call_hub", "detect_kind", "download",
           "eval_summary", "explain", "is_repo_id", "lay_out", "load_classifier_from_hub",
           "load_generator_from_hub", "load_pretrained", "push", "redact", "render_card", "resolve_generator_source", "resolve_generators", "snapshot",
           "stage", "upload", "validate_card"]
