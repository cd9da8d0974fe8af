"""``dnabert-serve``: run the HTTP service, or predict offline from a FASTA file.

    dnabert-serve serve [--host H] [--port P] [--models-dir DIR] [--device auto|cpu|gpu]
    dnabert-serve predict FILE --task promoter|lncrna-localization [--model NAME] [-o OUT]
                          [--server URL [--api-key KEY]]

``predict`` uses the same runtime and batcher as the server (no HTTP), so its scores are the
server's scores. With ``--server`` (also for ``scan``, ``variants`` and ``explain``) the work is
submitted to that server as a job instead, followed with a progress bar, and its result written
where the local command would write it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from service.commands import explain as explain_command
from service.commands import output_format
from service.commands import scan as scan_command
from service.commands import variants as variants_command
from service.commands.remote import add_server_arguments, run_job
from service.contract.errors import DnabertError
from service.contract.tasks import TASK_NAMES
from service.settings import Settings

CHUNK = 256  # records per submitted piece: progress granularity, and the batcher mixes pieces


def _settings(args) -> Settings:
    overrides = {}
    if getattr(args, "models_dir", None):
        overrides["models_dir"] = Path(args.models_dir)
    if getattr(args, "device", None):
        overrides["device"] = args.device
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    return Settings(**overrides)


MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers together (h11's incomplete-event limit); beyond it 400."""


def _listen_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before any model is loaded: a busy port fails at once."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def cmd_serve(args) -> int:
    import uvicorn

    from service.api.app import create_app, drain

    settings = _settings(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = _listen_socket(settings.host, settings.port)
    except OSError as exc:
        why = ("the address is already in use (is another server running there?)"
               if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)))
        print(f"dnabert-serve: error: cannot listen on {settings.host}:{settings.port}: {why}; "
              f"choose another port with --port N or DNABERT_PORT=N", file=sys.stderr)
        return 2
    app = create_app(settings)
    grace = settings.shutdown_grace_s

    class Server(uvicorn.Server):
        """uvicorn, draining the requests in progress on SIGTERM (:func:`service.api.app.drain`)."""

        def handle_exit(self, sig, frame) -> None:
            app.state.in_flight.draining = True  # refuse new requests before the port closes
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None) -> None:
            draining = asyncio.ensure_future(drain(app, grace))
            try:
                await super().shutdown(sockets)
            finally:
                draining.cancel()

    # http="h11": the header limit below holds whatever parsers are installed (httptools has none).
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=args.log_level,
                            access_log=args.access_log, http="h11", timeout_keep_alive=settings.keep_alive_s,
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=grace)
    server = Server(config)
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    print(f"dnabert-serve: serving {settings.models_dir} on http://{settings.host}:{settings.port} "
          f"(API docs: http://{host}:{settings.port}/docs)", flush=True)
    # uvicorn re-raises the signal it shut down for, under the handler it found: a SIGTERM that
    # ended in a graceful shutdown then exits 0 instead of dying of the signal.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main_thread else None
    try:
        server.run(sockets=[sock])
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        sock.close()
    return 0 if server.started else 3


OUTPUT_FORMATS = ("csv", "tsv", "json")


async def predict_file(path: Path, task: str, model: str | None, settings: Settings, progress: bool = True):
    """Predictions for every record of a FASTA file (plain or gzip), in file order."""
    from tqdm import tqdm

    from service.contract.fasta import read_fasta_bytes
    from service.runtime.inference import InferenceService

    records = read_fasta_bytes(path.read_bytes(), max_bytes=max(settings.max_upload_bytes, 1 << 34),
                               max_sequence_length=settings.max_sequence_length)
    service = InferenceService(settings)
    await service.start()
    bar = tqdm(total=len(records), unit="seq", disable=not progress, file=sys.stderr)
    try:
        pieces = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]

        async def one(piece):
            result = await service.predict(task, piece, model)
            bar.update(len(piece))
            return result

        results = await asyncio.gather(*(one(p) for p in pieces))
    finally:
        bar.close()  # before any error message, which then starts on a line of its own
        await service.stop()
    merged = results[0].model_copy(update={
        "results": [r for res in results for r in res.results],
        "count": sum(res.count for res in results),
    })
    return merged


def cmd_predict(args) -> int:
    from service.api.formats import lncrna_table, promoter_table
    from service.contract.tasks import PROMOTER

    fmt = output_format(args.output, args.format, {f: f for f in OUTPUT_FORMATS}, "csv")  # before any model loads
    if args.server:
        job = run_job(args, "predict", args.task, {"model": args.model, "format": fmt}, {"file": Path(args.file)},
                      args.output)
        if args.output:
            print(f"wrote {job['progress']['done']} predictions to {args.output} (job {job['id']} on {args.server})",
                  file=sys.stderr)
        return 0
    settings = _settings(args)
    settings.max_queue = max(settings.max_queue, 1 << 30)  # offline: the whole file may queue
    settings.request_timeout_s = max(settings.request_timeout_s, 24 * 3600)
    result = asyncio.run(predict_file(Path(args.file), args.task, args.model, settings, not args.quiet))
    if fmt == "json":
        text = result.model_dump_json(indent=2) + "\n"
    else:
        text = (promoter_table if args.task == PROMOTER else lncrna_table)(result, fmt)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {result.count} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnabert-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="start the HTTP service (settings from DNABERT_* variables)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--models-dir")
    s.add_argument("--device", choices=["auto", "cpu", "gpu"])
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.add_argument("--access-log", action="store_true")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("predict", help="predict offline from a FASTA file")
    s.add_argument("file")
    s.add_argument("--task", required=True, choices=TASK_NAMES)
    s.add_argument("--model", help="promoter variant or 'all' (default from settings)")
    s.add_argument("-o", "--output", help="output file (.csv, .tsv or .json); default: CSV to stdout")
    s.add_argument("--format", choices=OUTPUT_FORMATS, help="default: from the output file's extension, else csv")
    s.add_argument("--models-dir")
    s.add_argument("--device", choices=["auto", "cpu", "gpu"])
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_server_arguments(s)
    s.set_defaults(func=cmd_predict)
    explain_command.add_parser(sub)
    scan_command.add_parser(sub)
    variants_command.add_parser(sub)
    from service.ray.cli import add_parser as add_ray_parser  # Ray itself is imported when `ray` runs

    add_ray_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DnabertError as exc:
        where = f" (record {exc.record_id})" if exc.record_id else ""
        print(f"dnabert-serve: error [{exc.code}]{where}: {exc.message}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"dnabert-serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
