"""Numerical parity of our DNABERT-2 with a checkpoint directory's expected outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from service.contract.tokenization import SequenceTokenizer, TruncationPolicy
from training.models.dnabert2 import (
    DnaBertConfig,
    DnaBertModel,
    find_weights,
    load_backbone_state,
    read_state_dict,
)


def run_parity(directory: str | Path, output: str | Path | None = None) -> dict[str, float | None]:
    """Run ``DIR/inputs.json`` through the checkpoint; compare with ``DIR/expected.npz``.

    Returns the max absolute difference per output (``None`` where nothing is expected).
    ``input_ids`` is compared exactly (difference 0 or 1). ``last_hidden_state`` is compared at
    valid positions only (the published model writes zeros at padding, and so do we).
    """
    directory = Path(directory)
    config = DnaBertConfig.from_json(directory / "config.json")
    inputs = json.loads((directory / "inputs.json").read_text())
    tok = SequenceTokenizer.from_file(directory / "tokenizer.json", TruncationPolicy(max_tokens=1 << 20))
    pad_id = inputs.get("pad_token_id", tok.pad_id)
    ids, mask = tok.pad([e.ids for e in tok.encode(inputs["sequences"])])
    if pad_id != tok.pad_id:
        ids[mask == 0] = pad_id

    model = DnaBertModel(config).eval()
    load_backbone_state(model, read_state_dict(find_weights(directory)))
    classifier = None
    if (directory / "classifier.safetensors").is_file():
        state = read_state_dict(directory / "classifier.safetensors")
        load_backbone_state(model, state)
        classifier = torch.nn.Linear(config.hidden_size, state["classifier.weight"].shape[0])
        classifier.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
        classifier.eval()
    with torch.no_grad():
        hidden, pooled = model(torch.from_numpy(ids), torch.from_numpy(mask))
        logits = classifier(pooled) if classifier is not None else None
    result = {
        "input_ids": ids,
        "attention_mask": mask,
        "last_hidden_state": hidden.numpy(),
        "pooled_output": pooled.numpy(),
    }
    if logits is not None:
        result["classifier_logits"] = logits.numpy()
    if output is not None:
        np.savez(output, **result)

    diffs: dict[str, float | None] = {k: None for k in ("input_ids", "last_hidden_state", "pooled_output", "classifier_logits")}
    expected_file = directory / "expected.npz"
    if expected_file.is_file():
        exp = np.load(expected_file)
        if "input_ids" in exp:
            same = exp["input_ids"].shape == ids.shape and bool((exp["input_ids"] == ids).all())
            diffs["input_ids"] = 0.0 if same else 1.0
        if not diffs["input_ids"]:
            valid = mask.astype(bool)
            for key in ("last_hidden_state", "pooled_output", "classifier_logits"):
                if key in exp and key in result:
                    got, want = result[key], exp[key]
                    if key == "last_hidden_state":
                        got, want = got[valid], want[valid]
                    diffs[key] = float(np.abs(got - want).max())
    return diffs
