"""The W-Net paper's numbers for its four validations of synthetic cells (seed 001 §5),
shown beside ours in results.json and the report. Class order: NE, EO, BA, LY, MO."""
from __future__ import annotations

from wbcgen.review import PAPER_TABLE8

SOURCE = "Jung et al., W-Net / WBC GAN paper (2021 preprint), §5, Tables 5-8; private 6,562-image data"

TABLE5 = {  # real-trained W-Net classifies 1,000 generated images per class
    "what": "baseline W-Net (trained on real) classifies the generated images",
    "accuracy": 1.00, "per_class_accuracy": {c: 1.00 for c in
                                             ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")},
    "confusion_matrix": [[1000 if i == j else 0 for j in range(5)] for i in range(5)],
}

TABLE6 = {  # W-Net trained on the 5,000 generated images, tested on the 6,562 real ones
    "what": "W-Net trained on generated images, tested on all real images (TSTR)",
    "accuracy": 0.95, "precision": 0.93, "recall": 0.95, "f1": 0.94,
    "confusion_matrix": [[1979, 1, 19, 5, 2], [11, 1273, 19, 7, 0], [7, 3, 355, 10, 2],
                         [8, 2, 59, 1572, 35], [8, 0, 9, 77, 1099]],
}

TABLE7 = {  # difference in mean cosine similarity, real-real vs real-generated, in %
    "what": "difference in mean pairwise cosine similarity, real–real vs real–generated (%)",
    "per_class": {"neutrophil": 4.0, "eosinophil": 3.0, "basophil": 7.0, "lymphocyte": 6.0, "monocyte": 6.0},
    "mean": 5.0,
}

TABLE8 = {"what": "medical laboratory technologist classifies 10 real + 10 generated images per class",
          **PAPER_TABLE8}


def table6_per_class() -> dict:
    """Per-class accuracy (= recall) of the paper's Table 6 confusion matrix."""
    classes = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")
    cm = TABLE6["confusion_matrix"]
    return {c: cm[i][i] / sum(cm[i]) for i, c in enumerate(classes)}


ALL = {"source": SOURCE, "table5": TABLE5, "table6": TABLE6, "table7": TABLE7, "table8": TABLE8}
