"""Shared fixtures: the real data beside the repository (../shared/data)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WBCGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))
PBC = SHARED / "pbc-dev"
ZHENG = SHARED / "zheng2018"
BCCD = SHARED / "bccd-aug"

# Under pytest-xdist (README's test command, ``-n auto``) the workers share the cores: one worker's
# threads must not spin against another's (oversubscribed OpenMP is several times slower).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads() // _WORKERS)))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"real test data missing: {path} (CI puts ../shared beside the clone)")
    return path


@pytest.fixture(scope="session")
def pbc_dir() -> Path:
    return _need(PBC)


@pytest.fixture(scope="session")
def zheng_dir() -> Path:
    return _need(ZHENG)


@pytest.fixture(scope="session")
def zheng_small(tmp_path_factory, zheng_dir) -> Path:
    """A real two-source subset of zheng2018 in its own layout: the first 30 BMPs of Dataset 1 and 12 of
    Dataset 2, each with its CSV cut to those images' rows."""
    import csv
    import shutil

    out = tmp_path_factory.mktemp("zheng_small")
    for n, keep in ((1, 30), (2, 12)):
        (out / f"Dataset {n}").mkdir()
        files = sorted((zheng_dir / f"Dataset {n}").glob("*.bmp"))[:keep]
        for f in files:
            shutil.copy(f, out / f"Dataset {n}" / f.name)
        ids = {str(int(f.stem)) for f in files}
        name = f"Class Labels of Dataset {n}.csv"
        with open(zheng_dir / name, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r and r[0].strip() in ids])
    return out


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    return _need(BCCD)


@pytest.fixture(scope="session")
def pbc_small(tmp_path_factory, pbc_dir) -> Path:
    """A real 5-class subset of pbc-dev (12 images per class), copied into a temp folder."""
    import shutil

    out = tmp_path_factory.mktemp("pbc_small")
    for cls_dir in sorted(p for p in pbc_dir.iterdir() if p.is_dir()):
        (out / cls_dir.name).mkdir()
        for f in sorted(cls_dir.iterdir())[:12]:
            shutil.copy(f, out / cls_dir.name / f.name)
    return out


@pytest.fixture(scope="session")
def gan_work(tmp_path_factory, pbc_small):
    """(work dir, synthetic folder): tiny GANs for every class trained on ``pbc_small`` with
    `wbcgen train-gan`, then `wbcgen sample` — made once per session, shared by the evaluate
    and report tests."""
    from evalkit import make_synthetic

    work = tmp_path_factory.mktemp("gan_work")
    return work, make_synthetic(work, pbc_small)


@pytest.fixture(scope="module")
def cells(pbc_small):
    """``pbc_small`` loaded as a CellSet (uint8 images + labels + manifest), once per test module."""
    from wbcgen.data import load_cells

    return load_cells(pbc_small, progress=False)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models gain nothing from threads, and one thread is much faster on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
