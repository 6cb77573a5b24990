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


#: the pieces of real data the tests read, each with a file that shows the piece is there
DATA_PIECES = {"dsprites": "dsprites/dsprites_downsampled.npz", "mnist": "mnist/t10k-images-idx3-ubyte.gz",
               "celeba": "celeba/list_attr_celeba.txt"}
SHIPPED_DATA = Path(__file__).resolve().parent / "data"  # tests/data: the pieces whose licences allow it
MISSING_DATA = "real test data missing:"  # the start of every skip reason for a missing piece


def data_folders() -> list[tuple[str, Path]]:
    """Where pieces of real data are looked for, in order: $VAELAB_TEST_DATA, ../shared/data beside the
    project root, the copy shipped in tests/data."""
    out = []
    env = os.environ.get("VAELAB_TEST_DATA")
    if env:
        out.append(("$VAELAB_TEST_DATA", Path(env).expanduser()))
    out.append(("../shared/data", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    out.append(("tests/data", SHIPPED_DATA))
    return out


def find_piece(name: str) -> tuple[str, Path] | None:
    """(where, folder) of the first data folder holding piece ``name`` (dsprites, mnist, celeba), or None."""
    marker = DATA_PIECES.get(name)
    for where, base in data_folders():
        if (base / marker).is_file() if marker else (base / name).exists():
            return where, base / name
    return None


class DataPieces:
    """``shared_data / "mnist"``: the folder of that piece, found per piece (see :func:`data_folders`);
    the test is skipped when no folder holds it."""

    def __truediv__(self, name: str) -> Path:
        found = find_piece(str(name))
        if found is None:
            pytest.skip(f"{MISSING_DATA} {name} (looked in {', '.join(w for w, _ in data_folders())})")
        return found[1]

    def __repr__(self):
        return "<real test data: " + ", ".join(f"{n} from {(find_piece(n) or ('nowhere',))[0]}"
                                                for n in DATA_PIECES) + ">"


@pytest.fixture(scope="session")
def shared_data() -> DataPieces:
    """Real data pieces: ``shared_data / "dsprites"``, ``/ "mnist"``, ``/ "celeba"`` (each skips the test
    when absent everywhere)."""
    return DataPieces()


def pytest_terminal_summary(terminalreporter, config):
    """One line at the end: where each piece of real data came from, and how many tests were skipped
    because a piece was missing."""
    if config.option.collectonly:
        return
    skipped = 0
    for rep in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(rep, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
        skipped += MISSING_DATA in reason
    found = {n: find_piece(n) for n in DATA_PIECES}
    where = ", ".join(f"{n} from {f[0]}" if f else f"{n} missing" for n, f in found.items())
    missing = [n for n, f in found.items() if f is None]
    if skipped or missing:
        hint = (f"{skipped} test(s) skipped for missing data; to run them set VAELAB_TEST_DATA to a folder "
                f"holding {', '.join(f'{n}/' for n in missing) or 'the pieces'} (tests/data/README.md)")
    else:
        hint = "no test skipped for missing data"
    terminalreporter.write_line(f"real test data: {where}; {hint}")


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
    """The real dSprites subset (dsprites/dsprites_downsampled.npz, found as :class:`DataPieces` finds it)."""
    return shared_data / "dsprites" / "dsprites_downsampled.npz"
