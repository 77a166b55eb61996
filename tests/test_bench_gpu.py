"""The GPU rows' tools (issue 12): bench/pack_data.py (the benchmark's data, small enough to travel, with
its split re-keyed) and bench/cuda_check.py (run here as a CPU dry run; its CUDA paths need a GPU)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from evalkit import bench_module

from wbcgen.data import load_cells
from wbcgen.data.splits import apply_split, load_split, make_split, save_split

ROOT = Path(__file__).resolve().parents[1]
pack = bench_module("pack_data")


def test_pack_keeps_every_image_in_its_part_and_close_to_its_pixels(pbc_small, tmp_path):
    cells = load_cells(pbc_small, progress=False)
    save_split(tmp_path / "split.json", make_split(cells, test_fraction=0.2, seed=0))
    info = pack.pack(str(pbc_small), tmp_path / "packed", tmp_path / "split.json", quality=90)
    assert info["images"] == len(cells) == 60 and Path(info["split"]).name == "packed-split.json"
    packed = load_cells(tmp_path / "packed", progress=False)
    old, new = load_split(tmp_path / "split.json"), load_split(info["split"])
    assert new["data"]["images_sha256"] != old["data"]["images_sha256"]  # other bytes ...
    for part in ("train", "test"):                                        # ... the same images in each part
        a, b = apply_split(cells, old, part), apply_split(packed, new, part)
        stems = lambda s: sorted(Path(m["path"]).stem for m in s.manifest)  # noqa: E731
        assert len(a) > 0 and stems(a) == stems(b)
    order = {Path(m["path"]).stem: i for i, m in enumerate(packed.manifest)}
    same = [order[Path(m["path"]).stem] for m in cells.manifest]
    err = (packed.images[same].float() - cells.images.float()).abs()
    assert packed.images.shape == cells.images.shape and 0 < err.mean() < 3  # a JPEG 90 round trip
    with pytest.raises(SystemExit, match="not empty"):
        pack.pack(str(pbc_small), tmp_path / "packed", tmp_path / "split.json")


def test_cuda_check_dry_run_on_cpu(pbc_small, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "bench" / "cuda_check.py"), "--data", str(pbc_small),  # noqa: E731
                                     "--device", "cpu", "--config", "tiny", "--variants", "fp32", *a],
                                    capture_output=True, text=True, cwd=ROOT, timeout=600)
    p = run("--out", str(tmp_path / "check.json"), "--steps", "6")
    v = json.loads((tmp_path / "check.json").read_text())["variants"]["fp32"]
    assert p.returncode == 0, p.stderr[-2000:]
    assert v["ok"] and v["losses_finite"] and v["cuda_sampling_repeatable"] and v["steps"] == 6
    assert v["cuda_vs_cpu_abs_diff"] == {"mean": 0.0, "max": 0} and v["img_per_s"] > 0  # CPU vs CPU: identical
    p = run("--out", str(tmp_path / "prof.json"), "--profile", "2")
    prof = json.loads((tmp_path / "prof.json").read_text())["variants"]["fp32"]
    assert p.returncode == 0, p.stderr[-2000:]
    assert prof["s_per_step"] > 0 and prof["img_per_s"] == pytest.approx(8 / prof["s_per_step"], rel=0.01)
    assert "aten::" in (tmp_path / "prof.txt").read_text()                 # the profiler's table
