"""What every wbcgen model class passes to ``PyTorchModelHubMixin`` (one ``library_name``,
links, intended use and the data attribution), so a direct ``push_to_hub`` card says what
the model is for. ``wbcgen push`` writes the fuller card with evaluation results."""
from __future__ import annotations

LIBRARY_NAME = "wbcgen"
TAGS = ["wbcgen", "white-blood-cells", "hematology", "microscopy", "biology"]


def _project_url(kind: str) -> str | None:
    """``Project-URL`` ``kind`` (e.g. Source, Documentation) of the installed distribution, if declared."""
    try:
        from importlib.metadata import PackageNotFoundError, metadata

        for entry in metadata("wbcgen").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() == kind.lower() and url.strip():
                return url.strip()
    except (PackageNotFoundError, ValueError):
        pass
    return None


REPO_URL = _project_url("Source")
DOCS_URL = _project_url("Documentation")

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title | default("wbcgen model", true) }}

{{ what | default("A model from the wbcgen toolkit (synthetic white-blood-cell images and classifiers).", true) }}
Code: {{ repo_url | default("the wbcgen package (`pip install wbcgen`)", true) }}.
Docs: {{ docs_url | default("the wbcgen README, section \\"Sharing on the Hugging Face Hub\\"", true) }}.

## Intended use

For **research and education only**. This is **not for diagnosis**: it is not a medical device
and must not be used for patient care, screening or any clinical decision.

## Training data

See `config.json` for the data this model was trained on. wbcgen's default training data is
PBC (Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J., "A dataset of
microscopic peripheral blood cell images for development of automatic recognition
systems", Data in Brief 30 (2020) 105474, doi:10.17632/snkd93bnjr.1), licence CC BY 4.0:
models derived from it carry that attribution. Push with `wbcgen push` for a card with the
exact data source, licence and evaluation results.
"""
