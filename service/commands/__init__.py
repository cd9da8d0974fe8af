"""Offline ``dnabert-serve`` commands beyond ``serve`` and ``predict``: each module has an
``add_parser(sub)`` that :func:`service.cli.build_parser` calls, and runs an
:class:`~service.runtime.inference.InferenceService` in process (same runtime, same batcher,
same numbers as the HTTP endpoints)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings


def offline_settings(args) -> Settings:
    """The settings of an offline run: everything may queue, no request deadline to speak of."""
    overrides = {k: v for k, v in {"models_dir": args.models_dir and Path(args.models_dir),
                                   "device": args.device}.items() if v}
    settings = Settings(**overrides)
    settings.max_queue = max(settings.max_queue, 1 << 30)
    settings.request_timeout_s = max(settings.request_timeout_s, 24 * 3600)
    return settings
