"""The simulator served over HTTP (`python -m ledgerly.llm.simulator --port N`).

A small threaded HTTP/1.1 server around the same `Simulator.handle()` the transport uses.
Streamed responses really stream (chunked transfer encoding, one SSE event per chunk, flushed
as produced); a truncated stream drops the connection without the final chunk, and a timeout
fault holds the connection past the client's read timeout, then drops it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qsl, urlsplit

from .handler import Simulator, StreamCut

log = logging.getLogger("ledgerly.llm.simulator")

# A timeout fault holds the connection for the client's read timeout (the SDK sends it as
# x-stainless-read-timeout) plus this margin, but never longer than MAX_STALL_S.
STALL_MARGIN_S = 1.0
MAX_STALL_S = 660.0


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SimulatorHTTPServer
    server_version = "LedgerlySimulator/1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        log.info("simulator %s - %s", self.address_string(), format % args)

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        host = self.headers.get("host") or f"127.0.0.1:{self.server.server_port}"
        result = self.server.simulator.handle(
            self.command,
            url.path,
            dict(self.headers.items()),
            body,
            query=dict(parse_qsl(url.query)),
            base_url=f"http://{host}",
        )
        if result.timeout:
            self._stall()
            return
        self.send_response(result.status)
        for name, value in result.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if result.chunks is None:
            self.send_header("content-length", str(len(result.body)))
            self.end_headers()
            self.wfile.write(result.body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for chunk in result.chunks:
                if self.server.stopping.is_set():
                    raise StreamCut("server stopping")
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
        except StreamCut:
            self._drop()
            return
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _stall(self) -> None:
        try:
            read_timeout = float(self.headers.get("x-stainless-read-timeout") or 600.0)
        except ValueError:
            read_timeout = 600.0
        self.server.stopping.wait(min(MAX_STALL_S, read_timeout + STALL_MARGIN_S))
        self._drop()

    def _drop(self) -> None:
        """Close the connection abruptly, mid-response."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(simulator: Simulator, *, host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop cleanly (in-flight streams are cut)."""
    server = SimulatorHTTPServer((host, port), simulator)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("simulator received signal %s, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    config = simulator.config
    log.warning(
        "Ledgerly LLM SIMULATOR (offline, not Claude) listening on http://%s:%s "
        "(mode=%s, latency median=%sms sigma=%s, fault rate=%s, seed=%s)",
        host,
        server.server_port,
        config.mode,
        config.latency_median_ms,
        config.latency_sigma,
        config.fault_rate,
        config.seed,
    )
    thread = threading.Thread(target=server.serve_forever, name="simulator-http", daemon=True)
    thread.start()
    try:
        stop.wait()
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        log.warning("Ledgerly LLM simulator stopped")
