from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Exported model folders for the API tests: ``$DNABERT_TEST_MODELS_DIR`` or the repo's ``models/``."""
    path = Path(os.environ.get("DNABERT_TEST_MODELS_DIR", REPO / "models"))
    if not (path / "promoter").is_dir():
        pytest.skip(f"no promoter models under {path} (set DNABERT_TEST_MODELS_DIR to a models folder)")
    return path
