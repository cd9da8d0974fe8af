"""Fine-tuning as a job: what a ``kind=finetune`` job of the service runs in its own process.

    python -m training.finetune SPEC.json

``SPEC.json`` is a :class:`FinetuneSpec`. The worker

1. reads the labelled file the client uploaded (CSV ``sequence,label`` for promoters; FASTA
   whose headers start with one 0/1 digit per label for lncRNA), refusing it with a message that
   names the line or record;
2. splits it by a hash of each sequence into train (80 %), dev (10 %) and test (10 %), so that
   the test metrics are on sequences the model never saw and the same file always splits the
   same way;
3. starts from the base: an exported model folder (an embedded model: its backbone weights are
   recovered from ``model.onnx``, :func:`training.export.embedding.recover_classifier`) or a
   checkpoint folder (a DNABERT-2-117M directory, or a run's ``model/`` folder);
4. trains with :func:`training.train.train` (early stopping on dev, the dev curve written to
   ``curve.jsonl`` in the run folder as it goes, which the service shows in the job's status),
   evaluates on the test split and exports the model folder, verified against PyTorch;
5. writes ``result.json`` (metrics and the folder) in the run folder.

Any failure ends the process with exit status 1 and a one-line ``error: ...`` on stderr (a
usage problem, status 2). The service sets the process's time and memory limits.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from service.contract import tasks
from service.contract.card import CARD_FILE, ModelCard
from service.contract.errors import DnabertError
from service.contract.tokenization import tokenizer_for_card
from training.data import Example, hash_split, read_csv, read_labelled, read_labelled_fasta

SPLIT_SALT = "finetune-v1"
DEV_FRACTION = 0.1
TEST_FRACTION = 0.1
MIN_EXAMPLES = 20


@dataclass(frozen=True)
class FinetuneSpec:
    task: str
    variant: str
    data: str
    """The labelled file (CSV for promoters, labelled FASTA for lncRNA)."""
    base: str
    """An exported model folder (with ``card.json``) or a checkpoint folder."""
    run_dir: str
    out: str
    """The model folder to export to (a new version of a named model)."""
    name: str
    epochs: int = 3
    lr: float | None = None
    max_minutes: float = 10.0
    threads: int | None = None
    seed: int = 42
    batch_size: int = 32

    @classmethod
    def load(cls, path: str | Path) -> FinetuneSpec:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def _write_split(examples: list[Example], path: Path, task: str) -> Path:
    if task == tasks.PROMOTER:
        path = path.with_suffix(".csv")
        path.write_text("sequence,label\n" + "".join(f"{e.sequence},{e.label}\n" for e in examples))
    else:
        path = path.with_suffix(".fa")
        path.write_text("".join(f">{''.join(map(str, e.label))}|{i}\n{e.sequence}\n" for i, e in enumerate(examples)))
    return path


def read_upload(path: str | Path, task: str) -> list[Example]:
    """The labelled examples of an uploaded file, whatever it is called: FASTA (first character
    ``>``) with one 0/1 digit per label at the start of each header, or CSV ``sequence,label``."""
    with Path(path).open("rb") as fh:
        first = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    spec = tasks.task(task)
    n_labels = len(spec.labels) if spec.activation == "sigmoid" else 1
    if first == b">":
        return read_labelled_fasta(path, n_labels=n_labels)
    if n_labels > 1:
        raise ValueError(f"{task} fine-tuning takes FASTA whose headers start with {n_labels} 0/1 label digits "
                         f"({', '.join(spec.labels)}), e.g. '>010 id'")
    return read_csv(path)


def split_data(spec: FinetuneSpec) -> dict[str, Path]:
    """The uploaded file cut into train/dev/test files in the run folder (by sequence hash)."""
    examples = read_upload(spec.data, spec.task)
    if len(examples) < MIN_EXAMPLES:
        raise ValueError(f"{len(examples)} labelled sequences; fine-tuning needs at least {MIN_EXAMPLES}")
    parts = hash_split(examples, dev=DEV_FRACTION, test=TEST_FRACTION, salt=SPLIT_SALT)
    for name, part in parts.items():
        if not part:
            raise ValueError(f"the {name} split is empty: send more labelled sequences")
    folder = Path(spec.run_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    return {name: _write_split(part, folder / name, spec.task) for name, part in parts.items()}


def initial_weights(spec: FinetuneSpec) -> Path:
    """What ``init_from`` takes: a checkpoint folder as it is, or for an exported model folder a
    run folder holding the backbone recovered from its graph."""
    base = Path(spec.base)
    if not (base / CARD_FILE).is_file():
        return base
    from training.checkpoint import save_classifier
    from training.export.embedding import recover_classifier

    card = ModelCard.load(base)
    if card.task != spec.task:
        raise ValueError(f"base model {card.task}/{card.name} is a {card.task} model, not {spec.task}")
    model, _ = recover_classifier(base)
    return save_classifier(model, tokenizer_for_card(base, card), Path(spec.run_dir) / "init", task=card.task)


def run(spec: FinetuneSpec) -> dict[str, Any]:
    from training.job import TrainJob
    from training.train import train

    files = split_data(spec)
    init = initial_weights(spec)
    job = TrainJob(task=spec.task, variant=spec.variant, train=files["train"], dev=files["dev"], test=files["test"],
                   init_from=init, epochs=spec.epochs, lr=spec.lr, max_minutes=spec.max_minutes, seed=spec.seed,
                   threads=spec.threads, batch_size=spec.batch_size, run_dir=Path(spec.run_dir) / "run",
                   export=Path(spec.out), name=spec.name, eval_every=0)
    result = train(job)
    card = ModelCard.load(spec.out)
    summary = {"out": spec.out, "name": spec.name, "variant": spec.variant,
               "metrics": {k: v.model_dump(exclude_none=True) for k, v in card.metrics.items()},
               "train_seconds": card.training.train_seconds,
               "split": {"rule": f"by sequence hash: {1 - DEV_FRACTION - TEST_FRACTION:.0%} train, "
                                 f"{DEV_FRACTION:.0%} dev, {TEST_FRACTION:.0%} test",
                         "sizes": {k: sum(1 for _ in read_labelled(p, spec.task)) for k, p in files.items()}},
               "report": result.report()}
    (Path(spec.run_dir) / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="the job's FinetuneSpec as JSON")
    args = parser.parse_args(argv)
    try:
        spec = FinetuneSpec.load(args.spec)
        tasks.task(spec.task)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run(spec)
    except (DnabertError, ValueError, OSError) as exc:
        print(f"error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
