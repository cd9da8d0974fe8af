"""CI runs the Ray tests: where ``CI`` is set, the ray extra must be there (elsewhere the Ray
tests skip with a message when it is not)."""

from __future__ import annotations

import importlib.util
import os

import pytest


def test_ci_has_the_ray_extra():
    if not os.environ.get("CI"):
        pytest.skip("outside CI the ray extra is optional: pip install -e '.[cpu,ray]'")
    missing = [m for m in ("ray", "ray.serve", "psycopg") if importlib.util.find_spec(m) is None]
    assert not missing, f"CI installs the ray extra (.ci/run), but {missing} cannot be imported"
