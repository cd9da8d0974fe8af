"""The one request lifecycle of every inference endpoint, written once.

An endpoint's handler declares its own query parameters, takes an :class:`InferenceCall` (a
per-request dependency) and calls :meth:`InferenceCall.run` with its task, the model asked
for, the output format, the work to do on the records and the table renderer. ``run`` does, in
this order and for every endpoint alike:

1. **format negotiation** (``format=`` or ``Accept``; 406 listing what is offered);
2. **model resolution** (404 unknown, 503 not ready or not served) before the body is read;
3. **admission** against ``max_requests_in_flight`` (429 with ``Retry-After``, before the body);
4. **reading the body** (FASTA, gzip, multipart or JSON, within the upload limits);
5. **the work**, awaited while watching for the client to go away: a disconnect cancels it,
   and its queued sequences leave the batchers unrun (the deadline is the batcher's: 504);
6. **counting**: every request and its sequences by endpoint, model and status, refusals
   included, with the model label only ever a served model's name (or ``unknown``);
7. **rendering**: JSON, or CSV/TSV through the endpoint's table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from service.api.formats import MEDIA, Format, choose_format
from service.api.inputs import read_records
from service.contract.errors import ClientClosed, DnabertError, Overloaded
from service.contract.fasta import FastaRecord
from service.contract.tasks import ALL
from service.runtime.inference import InferenceService
from service.settings import Settings

log = logging.getLogger("dnabert.service")
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

Table = Callable[[Any, Format], str]


class InFlight:
    """Inference requests between admission and their answer (one event loop: no lock needed)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Admit a request, or refuse it with 429 (before its body is read)."""
        if self.count >= self.limit:
            raise Overloaded(f"{self.limit} prediction requests are already in progress; retry in 1 s",
                             retry_after=1.0)
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


class InferenceCall:
    """One inference request, from admission to its rendered answer (a FastAPI dependency)."""

    def __init__(self, request: Request):
        self.request = request
        self.service: InferenceService = request.app.state.service
        self.settings: Settings = request.app.state.settings
        self.gate: InFlight = request.app.state.in_flight

    async def run(self, task: str, model: str | None, fmt: str | None,
                  work: Callable[[list[FastaRecord]], Awaitable[R]], table: Table) -> Response:
        label = self._label(task, model)
        records: list[FastaRecord] | None = None
        try:
            chosen = choose_format(self.request, fmt)
            label = self._label(task, model, self.service.resolve(task, model))
            with self.gate.admit():
                records = await read_records(self.request, self.settings)
                result = await self._unless_disconnected(work(records))
        except DnabertError as exc:
            self._count(task, label, exc.http_status, records)
            raise
        self._count(task, label, 200, records)
        if chosen == "json":
            return JSONResponse(result.model_dump(mode="json"))
        return PlainTextResponse(table(result, chosen), media_type=MEDIA[chosen])

    def _label(self, task: str, model: str | None, resolved: list | None = None) -> str:
        """The metrics label: the served model's name, ``all``, or ``unknown`` (never client text)."""
        if resolved:
            return ALL if len(resolved) > 1 else resolved[0].name
        served = self.service.task_models(task)
        name = model or self.service.default_model(task) or (next(iter(served)) if len(served) == 1 else None)
        known = name == ALL or name in self.service.task_models(task)
        return name if known and name else "unknown"

    def _count(self, endpoint: str, model: str, status: int, records: list | None) -> None:
        m = self.service.metrics
        m.requests.labels(endpoint, model, str(status)).inc()
        if records is not None:
            m.sequences.labels(endpoint, model, str(status)).inc(len(records))
        if status == 429:
            m.rejected.labels(endpoint, "overloaded").inc()

    async def _unless_disconnected(self, work: Awaitable[T]) -> T:
        """Await ``work``; if the client disconnects first, cancel it (its queued sequences are
        dropped from the batchers, unrun) and raise :class:`ClientClosed`."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_disconnected(self.request))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            watcher.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("request %s: the client disconnected while waiting; its work was withdrawn",
                 getattr(self.request.state, "request_id", "-"))
        raise ClientClosed("the client closed the connection before the answer was ready")


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away. The body has been read, so the server's next
    message is ``http.disconnect``; a server that answers with empty body messages instead is
    asked again after a short pause, never in a busy loop."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)


Call = Annotated[InferenceCall, Depends(InferenceCall)]
