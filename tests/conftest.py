"""Shared fixtures.

Real-data tests read the shared example data from ``$SEG2MED_EXAMPLES``
(default ``../shared/data`` relative to the repository root). When
``SEG2MED_REQUIRE_DATA=1`` (set by ``.ci/run``) a missing data folder is an
error, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _examples_dir() -> Path:
    return Path(os.environ.get("SEG2MED_EXAMPLES", str(REPO.parent / "shared" / "data"))).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _examples_dir()
    if not (d / "totalsegmentator" / "example_ct.nii.gz").is_file():
        msg = f"shared example data not found at {d} (set SEG2MED_EXAMPLES)"
        if os.environ.get("SEG2MED_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def ts_dir(data_dir: Path) -> Path:
    """``totalsegmentator/`` folder: subject A (CT) and subject C (MR)."""
    return data_dir / "totalsegmentator"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and a busy machine loses a lot (oversubscription)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
