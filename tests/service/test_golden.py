"""A fixed FASTA through every embedded model gives the probabilities it gave when the fixture
was written (``tests/fixtures/golden_predictions.json``, to 1e-7).

The fixture was made with the service's prediction path before its code was reorganised; any
change to normalisation, tokenization, batching, the sessions or the activations that moves a
score shows up here. Regenerate it only for a change that is meant to move scores (a new
embedded model), and say so in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .robustness import FASTA, MODELS_DIR, make_settings, needs_models, run, serving

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = json.loads((FIXTURES / "golden_predictions.json").read_text())
BODY = (FIXTURES / "golden.fasta").read_bytes()
ATOL = 1e-7


def _scores(result: dict) -> list[float]:
    if "probability" in result:
        return [result["probability"], *(result.get("variant_probabilities") or {}).values()]
    return list(result["scores"].values())


@needs_models
def test_every_embedded_model_scores_the_golden_fasta_as_before():
    async def go():
        checked = []
        async with serving(make_settings(MODELS_DIR, default_promoter_model="cnn_bilstm_max")) as client:
            for key, expected in GOLDEN.items():
                task, name = key.split("/")
                if name != "all" and not (MODELS_DIR / task / name).is_dir():
                    continue
                resp = await client.post(f"/predict/{task}?model={name}", content=BODY, headers=FASTA)
                assert resp.status_code == 200, resp.text
                got = resp.json()
                assert [r["id"] for r in got["results"]] == [r["id"] for r in expected["results"]]
                for g, e in zip(got["results"], expected["results"], strict=True):
                    assert g["length"] == e["length"] and g["flags"] == e["flags"], (key, g["id"])
                    assert g.get("label") == e.get("label") and g.get("locations") == e.get("locations")
                    assert _scores(g) == pytest.approx(_scores(e), abs=ATOL, rel=0), (key, g["id"])
                checked.append(key)
        return checked

    checked = run(go())
    assert "promoter/all" in checked and "promoter/cnn_bilstm_max" in checked, checked
    assert len(checked) >= 6, checked
