"""`SimulatorTransport`: the simulator mounted under the real SDK as an httpx2 transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx2

from .config import SimulatorConfig
from .handler import SimResponse, Simulator, StreamCut


class _Body(httpx2.SyncByteStream):
    def __init__(self, response: SimResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        chunks = self._response.chunks
        if chunks is None:
            yield self._response.body
            return
        try:
            yield from chunks
        except StreamCut as exc:
            # What httpx2 raises when a server drops the connection mid-body.
            raise httpx2.RemoteProtocolError(str(exc), request=self._request) from exc

    def close(self) -> None:
        chunks = self._response.chunks
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class _AsyncBody(httpx2.AsyncByteStream):
    """The same body for an async client; paced chunks are pulled in a worker thread."""

    def __init__(self, body: _Body) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = iter(self._body)
        done = object()
        while True:
            chunk = await asyncio.to_thread(next, chunks, done)
            if chunk is done:
                return
            yield chunk  # type: ignore[misc]

    async def aclose(self) -> None:
        self._body.close()


class SimulatorTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """An httpx2 transport that answers Anthropic API requests from an in-process simulator.

    Use as `anthropic.Anthropic(api_key="sk-sim-...", http_client=httpx2.Client(
    transport=SimulatorTransport()))`. The SDK's own retries, timeouts and parsing run unchanged.
    State (prompt cache, rate limits, fault counters, batches) lives in this transport object.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.simulator = Simulator(config)

    @property
    def config(self) -> SimulatorConfig:
        return self.simulator.config

    def inject(self, fault: str, times: int = 1) -> None:
        """Queue `fault` for the next `times` POST /v1/messages requests on this transport."""
        self.simulator.faults.inject(fault, times)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._respond(request, request.read())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """For `httpx2.AsyncClient` / `anthropic.AsyncAnthropic`; latency never blocks the loop."""
        raw = await request.aread()
        response = await asyncio.to_thread(self._respond, request, raw)
        body = response.stream
        if isinstance(body, _Body):
            response.stream = _AsyncBody(body)
        return response

    def _respond(self, request: httpx2.Request, raw: bytes) -> httpx2.Response:
        url = request.url
        result = self.simulator.handle(
            request.method,
            url.path,
            dict(request.headers),
            raw,
            query=dict(url.params),
            base_url=f"{url.scheme}://{url.netloc.decode('ascii')}",
        )
        if result.timeout:
            raise httpx2.ReadTimeout(
                "simulated read timeout (x-sim-fault: timeout)", request=request
            )
        return httpx2.Response(
            result.status,
            headers=result.headers,
            stream=_Body(result, request),
            request=request,
        )
