"""The one request lifecycle of every inference endpoint, written once.

An endpoint's handler declares its own query parameters, takes an :class:`InferenceCall` (a
per-request dependency) and calls :meth:`InferenceCall.run` with its task, the model asked
for, the output format, the work to do on the records and the table renderer. ``run`` does, in
this order and for every endpoint alike:

0. **parameter check**: a query parameter the route does not declare (a misspelled
   ``threshold_nucleolus``) is a 422 naming it and the accepted ones, never silently ignored;
1. **format negotiation** (``format=`` or ``Accept`` with its q-values; 406 listing what is
   offered: :mod:`service.api.negotiation`);
2. **model resolution** (404 unknown, 503 not ready or not served) before the body is read;
3. **admission** against ``max_requests_in_flight`` (429 with ``Retry-After``, before the body);
4. **reading the body** (FASTA, gzip, multipart or JSON, within the upload limits and the
   body deadline ``body_timeout_s``: 408 ``body_timeout``, and the slot is free again);
5. **the work**, awaited while watching for the client to go away: a disconnect cancels it,
   and its queued sequences leave the batchers unrun (the deadline is the batcher's: 504);
6. **counting**: every request and its sequences by endpoint, model and status, refusals and
   unexpected errors (500, re-raised to the app's handler) included, with the model label only
   ever a served model's name (or ``unknown``);
7. **rendering**: JSON, or CSV/TSV through the endpoint's table.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from service.api.inputs import ShuttingDown, read_records
from service.api.negotiation import MEDIA, OFFERED, Format, choose_format
from service.contract.errors import ClientClosed, DnabertError, Overloaded
from service.contract.fasta import FastaRecord
from service.contract.tasks import ALL
from service.runtime.inference import InferenceService
from service.settings import Settings

log = logging.getLogger("dnabert.service")
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

Table = Callable[[Any, Format], str]


class UnknownParameter(DnabertError):
    """A query parameter the endpoint does not declare (a typo would otherwise be ignored)."""

    code = "invalid_parameter"
    http_status = 422


def declared_query_parameters(request: Request) -> list[str]:
    """The query parameters the request's route declares, its dependencies' included."""
    route = request.scope.get("route")
    dependants = [route.dependant] if route is not None and hasattr(route, "dependant") else []
    names: dict[str, None] = {}
    while dependants:
        dependant = dependants.pop(0)
        names.update(dict.fromkeys(p.alias for p in dependant.query_params))
        dependants.extend(dependant.dependencies)
    return list(names)


def refuse_unknown_parameters(request: Request) -> None:
    """422 naming the query parameters the route does not declare, and the accepted ones."""
    accepted = declared_query_parameters(request)
    unknown = sorted(set(request.query_params) - set(accepted))
    if not unknown:
        return
    named = ", ".join(repr(name[:64]) for name in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    hint = difflib.get_close_matches(unknown[0], accepted, n=1)
    raise UnknownParameter(f"unknown query parameter{'s' if len(unknown) > 1 else ''} {named}"
                           + (f" (did you mean {hint[0]!r}?)" if hint else "")
                           + f"; accepted: {', '.join(accepted)}")


class InFlight:
    """Inference requests between admission and their answer (one event loop: no lock needed).

    Shutdown (:func:`service.api.app.drain`): once ``draining`` is set, new requests are refused
    with 503 ``shutting_down``; after :meth:`cut_off`, bodies still being read stop with the same.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.draining = False
        self.cut = False
        self._cut_waiters: set[asyncio.Future] = set()

    def cutoff_waiter(self) -> asyncio.Future:
        """A future (of the running loop) that is done once :meth:`cut_off` has been called."""
        fut = asyncio.get_running_loop().create_future()
        if self.cut:
            fut.set_result(None)
        else:
            self._cut_waiters.add(fut)
            fut.add_done_callback(self._cut_waiters.discard)
        return fut

    def cut_off(self) -> None:
        """The shutdown grace period is over: bodies still being read stop (503)."""
        self.cut = True
        for fut in list(self._cut_waiters):
            if not fut.done():
                fut.set_result(None)

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Admit a request, or refuse it with 429 (before its body is read)."""
        if self.draining:
            raise ShuttingDown("the service is shutting down and takes no new requests; retry "
                               "(on another instance, or once it has restarted)")
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
                  work: Callable[[list[FastaRecord]], Awaitable[R]], table: Table | None = None, *,
                  offers: Mapping[str, Offer] | None = None, endpoint: str | None = None,
                  read: Callable[[Request, Settings], Awaitable[list[FastaRecord]]] | None = None,
                  target: Callable[[], tuple[str, str | None]] | None = None) -> Response:
        """Run one inference request through the lifecycle.

        ``table`` renders the JSON/CSV/TSV offers of a prediction endpoint; other endpoints pass
        their own ``offers`` (format name -> :class:`Offer`, first = default). ``endpoint`` is
        the metrics label (default: the task); ``read`` reads the body (default: FASTA, gzip,
        multipart or JSON records). A protocol whose body names the model (OpenAI's) passes
        ``target``, called once the body is read for the ``(task, model)`` to resolve then.
        """
        endpoint = endpoint or task
        offers = offers if offers is not None else table_offers(table)
        label = self._label(task, model) if target is None else "unknown"
        records: list[FastaRecord] | None = None
        try:
            refuse_unknown_parameters(self.request)
            chosen = choose_format(fmt, self.request.headers.get("accept"),
                                   {name: o.media_type for name, o in offers.items()})
            if target is None:
                label = self._label(task, model, self.service.resolve(task, model))
            with self.gate.admit():
                records = await (read or read_records)(self.request, self.settings)
                if target is not None:
                    task, model = target()
                    label = self._label(task, model, self.service.resolve(task, model))
                result = await self._unless_disconnected(work(records))
            response = offers[chosen].respond(result)
        except DnabertError as exc:
            self._count(endpoint, label, exc.http_status, records)
            raise
        except Exception as exc:  # a bug: counted here, answered 500 by the app's handler
            self._count(endpoint, label, 499 if isinstance(exc, ClientDisconnect) else 500, records)
            raise
        self._count(endpoint, label, 200, records)
        return response

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
        elif status == 408:
            m.rejected.labels(endpoint, "body_timeout").inc()

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


@dataclass(frozen=True)
class Offer:
    """One output format of an endpoint: the media type matched against ``Accept``, the
    Content-Type sent, and how the work's result becomes the body (text, bytes, or a whole
    :class:`Response`, e.g. a streaming one)."""

    media_type: str
    render: Callable[[Any], str | bytes | Response]
    content_type: str | None = None

    def respond(self, result: Any) -> Response:
        body = self.render(result)
        if isinstance(body, Response):
            return body
        return Response(body, media_type=self.content_type or self.media_type)


def json_body(result: BaseModel, exclude_none: bool = False) -> Response:
    """A result model as a JSON response (``exclude_none``: fields that are None left out)."""
    return JSONResponse(result.model_dump(mode="json", exclude_none=exclude_none))


def table_offers(table: Table | None) -> dict[str, Offer]:
    """JSON, and CSV/TSV through ``table``: the offers of the prediction endpoints."""
    offers = {"json": Offer(OFFERED["json"], json_body)}
    if table is not None:
        for fmt in ("csv", "tsv"):
            offers[fmt] = Offer(OFFERED[fmt], lambda result, fmt=fmt: table(result, fmt), MEDIA[fmt])
    return offers


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away. The body has been read, so the server's next
    message is ``http.disconnect``; a server that answers with empty body messages instead is
    asked again after a short pause, never in a busy loop."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)


Call = Annotated[InferenceCall, Depends(InferenceCall)]
