"""The offline commands run on a server instead: ``--server URL`` submits a job (``POST /jobs``),
follows it with a progress bar and writes its result where the local command would.

Only the standard library is used (the runtime install has no HTTP client): the input file is
streamed as the request body (a FASTA file as it is, plain or gzip; for variants a multipart body
with the ``vcf`` and ``reference`` fields), never read into memory. The result goes to ``OUT.part``
and is renamed at the end, so an interrupted download leaves nothing under the name asked for.
Interrupting the wait (Ctrl-C) leaves the job running on the server; its URL is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from service.contract.errors import DnabertError

POLL_S = 0.5
_BLOCK = 1 << 20


class RemoteError(DnabertError):
    """An error answered by the server (its code and message), or no answer from it."""

    code = "server"
    http_status = 502

    def __init__(self, code: str, message: str, record_id: str | None = None, line: int | None = None):
        super().__init__(message, record_id=record_id, line=line)
        self.code = code


def add_server_arguments(parser) -> None:
    parser.add_argument("--server", metavar="URL", help="run it as a job on this dnabert-serve server "
                        "(http://host:8000) and wait for the result, instead of running it here")
    parser.add_argument("--api-key", help="the server's API key (default: $DNABERT_API_KEY)")


class Client:
    """The few calls the commands make to a server's job API."""

    def __init__(self, server: str, api_key: str | None = None, timeout: float = 60.0):
        self.base = server.rstrip("/")
        self.key = api_key if api_key is not None else os.environ.get("DNABERT_API_KEY") or None
        self.timeout = timeout

    def _request(self, method: str, url: str, data=None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(url if "://" in url else self.base + url, data=data, headers=headers,
                                         method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - the user's server URL
        except urllib.error.HTTPError as exc:
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError("server_unreachable", f"cannot reach {self.base}: {reason}") from None

    def submit(self, kind: str, task: str, params: dict, body: Iterator[bytes] | BinaryIO, content_type: str,
               length: int) -> dict:
        query = urllib.parse.urlencode({"kind": kind, "task": task,
                                        **{k: v for k, v in params.items() if v is not None}})
        with self._request("POST", f"/jobs?{query}", body, {"Content-Type": content_type,
                                                             "Content-Length": str(length)}) as resp:
            return json.loads(resp.read())

    def job(self, url: str) -> dict:
        with self._request("GET", url) as resp:
            return json.loads(resp.read())

    def download(self, url: str, out: BinaryIO) -> None:
        with self._request("GET", url) as resp:
            shutil.copyfileobj(resp, out, _BLOCK)


def _error(exc: urllib.error.HTTPError) -> RemoteError:
    try:
        body = json.loads(exc.read() or b"{}").get("error", {})
    except ValueError:
        body = {}
    return RemoteError(body.get("code") or f"http_{exc.code}", body.get("message") or f"HTTP {exc.code} {exc.reason}",
                       body.get("record_id"), body.get("line"))


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            yield block


def multipart(fields: dict[str, Path]) -> tuple[Iterator[bytes], str, int]:
    """A multipart/form-data body streamed from files: (chunks, content type, length)."""
    boundary = uuid.uuid4().hex
    heads = {name: (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                    f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
             for name, path in fields.items()}
    end = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + fields[n].stat().st_size + 2 for n, h in heads.items()) + len(end)

    def chunks() -> Iterator[bytes]:
        for name, head in heads.items():
            yield head
            yield from _file_chunks(fields[name])
            yield b"\r\n"
        yield end

    return chunks(), f"multipart/form-data; boundary={boundary}", length


def run_job(args, kind: str, task: str, params: dict, files: dict[str, Path], output: str | None,
            binary: bool = False) -> dict:
    """Submit, wait with a progress bar on stderr (unless ``args.quiet``), write the result to
    ``output`` (stdout when None); returns the finished job."""
    client = Client(args.server, args.api_key)
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    if list(files) == ["file"]:
        path = files["file"]
        body, content_type, length = _file_chunks(path), "application/octet-stream", path.stat().st_size
    else:
        body, content_type, length = multipart(files)
    submitted = client.submit(kind, task, params, body, content_type, length)
    job = wait(client, submitted["url"], quiet=args.quiet)
    result = job["result"]["url"]
    if output is None:
        sys.stdout.flush()
        client.download(result, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return job
    target = Path(output)
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as out:
            client.download(result, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return job


def wait(client: Client, url: str, quiet: bool = False) -> dict:
    """Poll the job until it ends; its last state. Failed or cancelled: :class:`RemoteError`."""
    from tqdm import tqdm

    bar = tqdm(disable=quiet, file=sys.stderr, desc="job", unit="")
    try:
        while True:
            job = client.job(url)
            progress = job["progress"]
            if bar.total is None and progress["total"] is not None:
                bar.total, bar.unit = progress["total"], f" {progress['unit']}"
                bar.set_description(f"{job['kind']} job ({job['state']})")
            bar.n = progress["done"]
            bar.refresh()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        bar.close()
        print(f"\nthe job goes on on the server: {url} (DELETE it to cancel)", file=sys.stderr)
        raise
    finally:
        bar.close()
    if job["state"] == "failed":
        error = job.get("error") or {}
        raise RemoteError(error.get("code", "job_failed"), f"the job failed: {error.get('message', '')}",
                          error.get("record_id"), error.get("line"))
    if job["state"] == "cancelled":
        raise RemoteError("job_cancelled", f"the job {job['id']} was cancelled on the server")
    return job
