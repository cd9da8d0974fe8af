"""An exported model folder, checked against its card and ready to run.

A folder is checked before a session is created: every file the card names must exist and
match its sha256, and the graph's inputs and output must be the ones the card declares. The
tokenizer and the activation are the card's; the session comes from :mod:`service.runtime.session`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.contract.activation import activate
from service.contract.card import CARD_FILE, ModelCard, file_sha256
from service.contract.errors import ModelArtifactError
from service.contract.tokenization import tokenizer_for_card
from service.runtime.session import CPU, RuntimeUnavailable, Session


def load_card(folder: str | Path) -> ModelCard:
    folder = Path(folder)
    try:
        return ModelCard.load(folder)
    except FileNotFoundError as exc:
        raise ModelArtifactError(f"{folder}: no {CARD_FILE}") from exc
    except ValueError as exc:
        raise ModelArtifactError(f"{folder}: invalid {CARD_FILE}: {exc}") from exc


class OnnxModel:
    """An exported classifier: card + tokenizer + ONNX Runtime session.

    ``precision`` picks the graph (fp32, fp16, or int8 where the card lists one); ``threads`` is
    the session's intra-op thread count (0: the library's default).
    """

    def __init__(self, folder: str | Path, providers: Sequence[str] = (CPU,), precision: str = "fp32",
                 threads: int = 0):
        self.folder = Path(folder)
        self.card = load_card(self.folder)
        role = self.card.graph_role(precision)
        if role not in self.card.files:
            raise ModelArtifactError(f"{self.folder}: the card lists no {role} file")
        self._check_files()
        self.tokenizer = tokenizer_for_card(self.folder, self.card)  # BPE or k-mer, per the card
        graph = self.card.files[role]
        try:
            self.session = Session(self.folder / graph, providers, threads)
        except RuntimeUnavailable as exc:
            raise ModelArtifactError(f"{self.folder}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelArtifactError(f"{self.folder}: ONNX Runtime cannot load {graph}: {first}") from exc
        inputs, outputs = self.session.input_names, self.session.output_names
        if inputs != self.card.inputs or self.card.output not in outputs:
            raise ModelArtifactError(
                f"{self.folder}: graph inputs {inputs} / outputs {outputs} do not match the card "
                f"({self.card.inputs} -> {self.card.output})"
            )

    def _check_files(self) -> None:
        for role, name in self.card.files.items():
            path = self.folder / name
            if not path.is_file():
                raise ModelArtifactError(f"{self.folder}: {role} file {name} is missing")
            want = self.card.sha256.get(name)
            if want is None or file_sha256(path) != want:
                raise ModelArtifactError(f"{self.folder}: {name} does not match the sha256 in the card")

    @property
    def providers(self) -> list[str]:
        return self.session.providers

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Raw logits for one padded batch."""
        return self.session.run({"input_ids": input_ids, "attention_mask": attention_mask}, self.card.output)

    def scores(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """One batch of token-id rows -> (B, k) scores: padded, run, activated as the card says.
        This is the batcher's ``run_batch``."""
        input_ids, mask = self.tokenizer.pad(batch)
        return activate(self.run(input_ids, mask), self.card.activation, self.card.positive_index)
