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

torch.set_num_threads(min(2, torch.get_num_threads()))


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
