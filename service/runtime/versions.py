"""Model versions: several exports of one model name, side by side.

On disk, ``<task>/<name>/card.json`` (today's layout) is **version 1** of ``name``, and
``<task>/<name>/<N>/card.json`` (``N`` a positive integer) is **version N**; both may be there at
once (``1/`` beside a ``card.json`` of its own is refused as a duplicate). A new version is
published by writing a new ``<N>/`` folder (its ``card.json`` last, as the exporter does) and
calling ``POST /models/reload``; a version's files are never changed in place.

``model=<name>`` means the newest version that is ready; ``model=<name>@<N>`` selects one.
Loading and swapping are :meth:`service.runtime.inference.InferenceService.reload`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.contract.card import CARD_FILE
from service.contract.errors import ModelNotFound

log = logging.getLogger("dnabert.service")

SEPARATOR = "@"


def version_folders(models_dir: Path) -> dict[tuple[str, str], dict[int, Path]]:
    """``(task, name) -> {version: folder}`` of every model folder below ``models_dir``."""
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for card in sorted(models_dir.glob(f"*/*/{CARD_FILE}")):
        found.setdefault((card.parent.parent.name, card.parent.name), {})[1] = card.parent
    for card in sorted(models_dir.glob(f"*/*/*/{CARD_FILE}")):
        folder = card.parent
        if not folder.name.isdigit() or int(folder.name) < 1 or folder.name.startswith("0"):
            continue
        versions = found.setdefault((folder.parent.parent.name, folder.parent.name), {})
        version = int(folder.name)
        if version in versions:
            log.warning("skipping %s: version %d of %s is the card.json beside it", folder, version, folder.parent.name)
            continue
        versions[version] = folder
    return found


def folder_version(folder: Path, name: str) -> int:
    """The version a model folder holds (module docstring)."""
    return int(folder.name) if folder.name != name and folder.name.isdigit() else 1


def split_model(spec: str | None) -> tuple[str | None, int | None]:
    """``name@N`` -> (name, N); a plain name -> (name, None); 404 for a version that is not a
    positive integer."""
    if spec is None or SEPARATOR not in spec:
        return spec, None
    name, _, version = spec.partition(SEPARATOR)
    if not version.isdigit() or int(version) < 1:
        raise ModelNotFound(f"model {spec[:80]!r}: a version is a positive integer (name@2)")
    return name, int(version)


@dataclass
class ReloadReport:
    """What ``POST /models/reload`` did: versions loaded (and now served), versions refused with
    the reason (the versions that served before still do), versions already loaded."""

    loaded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
