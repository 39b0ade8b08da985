"""Fixtures shared by every test folder."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The read-only data folder beside the repository (../shared/data), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA
