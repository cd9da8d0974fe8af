from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DNABERT_SHARED_DIR", REPO.parent / "shared"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PARITY_DIR = SHARED / "fixtures" / "dnabert2_parity_a"


def pytest_configure(config):
    os.environ.setdefault("DNABERT_SHARED_DIR", str(SHARED))
    # Servers started by the tests keep their jobs under the test session's temporary folder,
    # never in the user's state folder (tests that run jobs give each server its own folder).
    if "DNABERT_JOBS_DIR" not in os.environ:
        import tempfile

        os.environ["DNABERT_JOBS_DIR"] = tempfile.mkdtemp(prefix="dnabert-test-jobs-")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.skip(f"parity fixture not found at {PARITY_DIR}")
    return PARITY_DIR


@pytest.fixture(scope="session")
def published_tokenizer_file() -> Path:
    path = SHARED / "dnabert2" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"published tokenizer not found at {path}")
    return path
