"""Shared fixtures (keep this file small and generic)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    """The whole suite runs torch on one intra-op thread: the models here are tiny (threads cost more
    than they save on 2 cores), and comparisons between runs need the same thread count on both sides."""
    import torch

    torch.set_num_threads(1)


def shared_data_dir() -> Path:
    """The real test data: $VAELAB_TEST_DATA, else ../shared/data beside the project root."""
    env = os.environ.get("VAELAB_TEST_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real data pieces (dsprites/, mnist/, celeba/); skips the test when absent."""
    p = shared_data_dir()
    if not p.is_dir():
        pytest.skip(f"real test data not found at {p} (set VAELAB_TEST_DATA to the shared data folder)")
    return p


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty data directory ($VAELAB_DATA; caches go to its cache/), progress bars off."""
    d = tmp_path / "vaelab-data"
    d.mkdir()
    monkeypatch.setenv("VAELAB_DATA", str(d))
    monkeypatch.setenv("VAELAB_QUIET", "1")
    return d


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (bitwise comparisons and fair timings), then restored."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def subset_npz(shared_data):
    """The real dSprites subset (../shared/data/dsprites/dsprites_downsampled.npz)."""
    p = shared_data / "dsprites" / "dsprites_downsampled.npz"
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return p
