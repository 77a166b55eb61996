"""Provenance: train_images.csv in GAN runs and generator/, generation.json from `wbcgen sample`,
recognised data sources — on real pbc-dev / zheng2018 / bccd images."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from wbcgen.data import CLASSES
from wbcgen.provenance import identify_source, read_train_images, train_images_hash


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_gan_runs_list_exactly_their_training_images(gan_work, pbc_small):
    work, synthetic = gan_work
    for cls in CLASSES:
        run = next((work / "runs" / "gan" / cls).iterdir())
        rows = read_train_images(run)
        want = {f"{cls}/{p.name}": _sha(p) for p in (pbc_small / cls).iterdir()}
        assert {r["path"]: r["sha256"] for r in rows} == want and {r["label"] for r in rows} == {cls}
        lean = (run / "generator" / "train_images.csv").read_text().splitlines()
        assert lean[0] == "sha256,label" and len(lean) == 13 and "/" not in "".join(lean)  # no paths travel
        h = hashlib.sha256((run / "generator" / "train_images.csv").read_bytes()).hexdigest()
        summary = json.loads((run / "summary.json").read_text())
        cfg = json.loads((run / "config.json").read_text())
        assert summary["train_images_sha256"] == h == cfg["data"]["train_images_sha256"] == train_images_hash(rows)
        assert summary["data_source"] == "pbc" and summary["license"] == "cc-by-4.0"
        for text in ((run / "config.json").read_text(), (run / "summary.json").read_text()):
            assert str(pbc_small) not in text and str(work) not in text


def test_sample_writes_generation_json(gan_work, pbc_small):
    work, synthetic = gan_work
    doc = json.loads((synthetic / "generation.json").read_text())
    assert doc["kind"] == "wbcgen-synthetic-dataset" and doc["version"] == 1
    assert doc["seed"] == 0 and doc["n_per_class"] == 12 and list(doc["generators"]) == list(CLASSES)
    with open(synthetic / "metadata.csv", newline="") as f:
        meta = {r["label"]: r["generator_sha256"] for r in csv.DictReader(f)}
    for cls, g in doc["generators"].items():
        assert set(g) == {"weights_sha256", "run_config", "data_source", "license", "train_images_sha256",
                          "n_train_images"}
        assert g["weights_sha256"] == meta[cls]
        assert g["data_source"] == "pbc" and g["license"] == "cc-by-4.0" and g["n_train_images"] == 12
        run = next((work / "runs" / "gan" / cls).iterdir())
        assert g["train_images_sha256"] == hashlib.sha256((run / "generator" / "train_images.csv").read_bytes()
                                                          ).hexdigest()
        assert g["run_config"]["cls"] == cls and g["run_config"]["data"]["name"] == pbc_small.name
    text = (synthetic / "generation.json").read_text()
    assert str(pbc_small) not in text and str(work) not in text


def test_identify_source_on_real_data(zheng_dir, bccd_dir, pbc_dir):
    zheng = [_sha(p) for p in sorted((zheng_dir / "Dataset 1").iterdir())[:20]]
    bccd = [_sha(p) for p in sorted((bccd_dir / "images").rglob("*.jp*g"))[:20]]
    pbc = [_sha(p) for p in sorted((pbc_dir / "basophil").iterdir())[:20]]
    assert identify_source(zheng) == ("zheng2018", "gpl-3.0")
    assert identify_source(bccd) == ("bccd", "mit")
    assert identify_source(pbc) == ("pbc", "cc-by-4.0")
    assert identify_source(pbc + zheng) == (None, None)           # mixed sources: not guessed
    assert identify_source(["0" * 64], "my-lab") == (None, None)
    assert identify_source(["0" * 64], "pbc-dev") == ("pbc", "cc-by-4.0")  # the run's recorded source name
