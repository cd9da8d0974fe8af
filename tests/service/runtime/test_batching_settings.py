"""The ``0 = auto`` batching settings resolve to what was measured best for each device."""

from __future__ import annotations

from service.settings import Settings, effective_batching


def test_cpu_shares_the_cores_among_the_workers_and_cuts_batches_of_32():
    assert effective_batching(Settings(), gpu=False, cpus=2) == (1, 32)
    assert effective_batching(Settings(workers=2), gpu=False, cpus=16) == (8, 32)
    assert effective_batching(Settings(workers=4), gpu=False, cpus=2) == (1, 32)  # never 0 threads


def test_gpu_keeps_the_library_threads_and_cuts_large_batches():
    assert effective_batching(Settings(), gpu=True, cpus=16) == (0, 256)


def test_explicit_values_win():
    s = Settings(intra_op_threads=3, max_batch_size=7, workers=1)
    assert effective_batching(s, gpu=False, cpus=2) == (3, 7)
    assert effective_batching(s, gpu=True, cpus=2) == (3, 7)


def test_models_share_one_tokenization_only_with_the_same_file_and_entry():
    """promoter/base and lncrna-localization/lncrna use the same tokenizer.json but truncate
    differently: their records must be tokenized separately."""
    import json
    from pathlib import Path

    from service.runtime.inference import InferenceService

    models = Path(__file__).resolve().parents[3] / "models"
    service = InferenceService(Settings(models_dir=models, device="cpu", intra_op_threads=1))
    service._load()
    keys = {f"{task}/{name}": lm.tokenizer_key for (task, name), lm in service.models.items()}
    cards = {k: json.loads((models / k / "card.json").read_text()) for k in keys}
    for a in keys:
        for b in keys:
            same = (cards[a]["sha256"][cards[a]["files"]["tokenizer"]] == cards[b]["sha256"][cards[b]["files"]["tokenizer"]]
                    and cards[a]["tokenization"] == cards[b]["tokenization"])
            assert (keys[a] == keys[b]) == same, (a, b)
    assert keys["promoter/base"] != keys["lncrna-localization/lncrna"]
    assert keys["promoter/base"] == keys["promoter/cnn"]
