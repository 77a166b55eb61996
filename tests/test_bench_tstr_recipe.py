"""bench/diag_tstr_recipe.py (issue 12, session 37): each variant is the recipe it claims — ``e20`` is what
``wbcgen evaluate --train-on synthetic`` trains, ``acq`` differs from the yardstick only by wnet-robust's
augmentation, ``last5`` / ``last20`` only by not restoring the synthetic-validation pick — and a row without a synthetic set is one clear error."""
import subprocess
import sys

from evalkit import bench_module

from classifiers.recipes import load_recipe

dt = bench_module("diag_tstr_recipe")
bq = bench_module("bench_quality")


def test_variants_are_the_declared_recipes():
    base = dt.variant_recipe("base")
    assert base["train"]["epochs"] == 5 and base == bq.recipe("wnet-cpu", 5)   # bench_quality's own TSTR recipe
    e20 = dt.variant_recipe("e20")
    assert e20 == load_recipe("wnet-cpu") and e20["train"]["epochs"] == 20     # evaluate's default
    acq = dt.variant_recipe("acq")
    robust = load_recipe("wnet-robust")
    assert acq["augment"] == robust["augment"] and acq["augment"] != base["augment"]
    assert acq["augment"]["hed"] > 0 and acq["augment"]["jpeg"] > 0 and acq["augment"]["blur"] > 0
    for part in ("train", "early_stopping", "eval"):      # the schedule and the rest: the yardstick's
        assert acq[part] == base[part], part
    assert acq["model"] == base["model"] == "wnet" and acq["model_args"] == base["model_args"]
    last = dt.variant_recipe("last5")
    assert last["early_stopping"]["restore_best"] is False and base["early_stopping"]["restore_best"] is True
    assert last["early_stopping"]["val_fraction"] == base["early_stopping"]["val_fraction"] > 0  # same slice held out
    assert {k: v for k, v in last.items() if k != "early_stopping"} == {k: v for k, v in base.items() if k != "early_stopping"}
    last20 = dt.variant_recipe("last20")   # e20 without its pick: same 20 epochs, last weights kept
    assert last20["early_stopping"]["restore_best"] is False and last20["train"] == e20["train"]
    assert {k: v for k, v in last20.items() if k != "early_stopping"} == {k: v for k, v in e20.items() if k != "early_stopping"}


def test_a_row_without_synthetic_cells_is_one_sentence(tmp_path):
    r = subprocess.run([sys.executable, str(dt.__file__), "e20", "no-such-row", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "no-such-row" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr
