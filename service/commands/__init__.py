"""Offline ``dnabert-serve`` commands beyond ``serve`` and ``predict``: each module has an
``add_parser(sub)`` that :func:`service.cli.build_parser` calls, and runs an
:class:`~service.runtime.inference.InferenceService` in process (same runtime, same batcher,
same numbers as the HTTP endpoints)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from service.contract.errors import DnabertError
from service.settings import Settings


class CommandUsage(DnabertError):
    """A command-line mistake of an offline command (reported on one line, exit status 2)."""

    code = "usage"
    http_status = 400


def output_format(output: str | None, requested: str | None, suffixes: Mapping[str, str], default: str) -> str:
    """``--format``, else the output file's extension (``suffixes``: extension -> format), else
    ``default``; an extension that names no format is refused before any model is loaded (rather
    than, say, writing CSV into ``out.xlsx``)."""
    if requested:
        return requested
    if not output:
        return default
    suffix = Path(output).suffix.lstrip(".").lower()
    if suffix not in suffixes:
        names = ", ".join(f"*.{s}" for s in suffixes)
        raise CommandUsage(f"cannot tell the output format from {Path(output).name!r}: name the file {names}, "
                           f"or give --format {{{','.join(dict.fromkeys(suffixes.values()))}}}")
    return suffixes[suffix]


def offline_settings(args) -> Settings:
    """The settings of an offline run: everything may queue, no request deadline to speak of."""
    overrides = {k: v for k, v in {"models_dir": args.models_dir and Path(args.models_dir),
                                   "device": args.device}.items() if v}
    settings = Settings(**overrides)
    settings.max_queue = max(settings.max_queue, 1 << 30)
    settings.request_timeout_s = max(settings.request_timeout_s, 24 * 3600)
    return settings
