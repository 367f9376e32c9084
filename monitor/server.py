"""The daemon's HTTP server: ``/metrics``, ``/healthz``, ``/readyz`` and, on the embedded bus, ingest.

``POST /v1/events`` and ``POST /v1/feedback`` accept one record value (an event or a batch envelope, as in
``monitor/schemas/record.schema.json``) and put it on the bus; validation happens in the pipeline, exactly
as for records from Kafka, so a bad event is counted and dead-lettered there. The server itself refuses
only what it cannot take: no or oversized ``Content-Length`` (411, 413), a wrong content type (415).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from monitor.transport import Producer

log = logging.getLogger(__name__)


class DaemonServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool],
                 ingest: Producer | None = None, topics: dict[str, str] | None = None,
                 max_body_bytes: int = 4 * 1024 * 1024) -> None:
        requests = Counter("inferwatch_http_requests_total", "HTTP requests served by the daemon.",
                           ("path", "code"), registry=registry)
        routes = {f"/v1/{kind}": topic for kind, topic in (topics or {}).items()} if ingest else {}

        class Handler(BaseHTTPRequestHandler):
            server_version = "inferwatch"

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s %s", self.address_string(), format % args)

            def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                path = self.path.split("?", 1)[0]
                requests.labels(path=path if path in _KNOWN or path in routes else "other", code=str(code)).inc()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._reply(200, b"ok\n")
                elif path == "/readyz":
                    ok = ready()
                    self._reply(200 if ok else 503, b"ready\n" if ok else b"starting\n")
                else:
                    self._reply(404, b"not found\n")

            def do_POST(self) -> None:
                topic = routes.get(self.path.split("?", 1)[0])
                if topic is None or ingest is None:
                    self._reply(404, b"not found: POST /v1/events or /v1/feedback (embedded bus only)\n")
                    return
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self._reply(411, b"Content-Length required\n")
                    return
                if int(length) > max_body_bytes:
                    self.close_connection = True
                    self._reply(413, f"body over {max_body_bytes} bytes\n".encode())
                    return
                ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
                if ctype not in ("application/json", "application/cloudevents+json"):
                    self._reply(415, b"Content-Type must be application/json\n")
                    return
                body = self.rfile.read(int(length))
                key = self.headers.get("X-Inferwatch-Key")
                ingest.send(topic, body, key.encode() if key else None)
                self._reply(202, b"accepted\n")

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="inferwatch-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_KNOWN = frozenset({"/metrics", "/healthz", "/readyz"})
