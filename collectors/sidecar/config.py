"""The sidecar's typed configuration, validated when it is built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from monitor.errors import ConfigError


@dataclass(frozen=True)
class ModelRef:
    """The monitored identity (model, version) of a model name as the upstream server knows it."""

    model: str
    version: str


@dataclass(frozen=True)
class SidecarConfig:
    """Where the sidecar listens, what it proxies to, and how much it captures.

    Parameters
    ----------
    upstream : ``http://host:port`` of the model server in the same pod (no TLS inside the pod).
    listen_host, listen_port : the proxy listener that clients call instead of the model server.
    admin_host, admin_port : a separate listener for ``/healthz``, ``/readyz`` and ``/metrics``; separate so the
        model server's own ``/metrics`` and health routes (vLLM, Triton, KServe all have them) stay reachable
        through the proxy unchanged.
    models : upstream model name (OIP URL or OpenAI ``model`` field) to monitored model and version; names not
        listed keep their upstream name, with the version from the URL, the response, or ``default_version``.
    capture_max_bytes : request or response bodies larger than this are proxied but not captured.
    connect_timeout_s : to open an upstream connection; a refused connection answers 502, a timeout 504.
    response_timeout_s : from sending a request upstream to its response head; then 504.
    idle_timeout_s : the longest silence inside a request or response body (a stalled stream is cut), and how
        long an idle client keep-alive connection is kept.
    max_connections : client connections at once; more are answered 503 and closed.
    upstream_pool_size : upstream connections at once (kept alive and reused); requests beyond wait their turn.
    max_head_bytes : largest request or response head; a larger request head is answered 431.
    ready_path : ``GET`` path on the upstream that must answer 2xx for ``/readyz`` (``None``: a TCP connect).
    payload_sample_rate : fraction of captured requests that carry a redacted, size-capped raw payload.
    payload_max_chars : cap of each payload text.
    attributes : bounded attributes (pod, variant) put on every event.
    """

    upstream: str = "http://127.0.0.1:8080"
    listen_host: str = "0.0.0.0"
    listen_port: int = 8000
    admin_host: str = "0.0.0.0"
    admin_port: int = 9400
    models: Mapping[str, ModelRef] = field(default_factory=dict)
    default_version: str = "unknown"
    capture_max_bytes: int = 1024 * 1024
    connect_timeout_s: float = 2.0
    response_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    max_connections: int = 1024
    upstream_pool_size: int = 64
    max_head_bytes: int = 64 * 1024
    ready_path: str | None = None
    payload_sample_rate: float = 0.0
    payload_max_chars: int = 4096
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ConfigError(f"sidecar.upstream must look like http://host:port, got {self.upstream!r}")
        for key in ("listen_port", "admin_port"):
            port = getattr(self, key)
            if not 0 <= port <= 65535:
                raise ConfigError(f"sidecar.{key} must be in [0, 65535], got {port}")
        for key in ("capture_max_bytes", "max_connections", "upstream_pool_size", "max_head_bytes",
                    "payload_max_chars"):
            if getattr(self, key) < 1:
                raise ConfigError(f"sidecar.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("connect_timeout_s", "response_timeout_s", "idle_timeout_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"sidecar.{key} must be a positive number of seconds, got {value}")
        if not 0.0 <= self.payload_sample_rate <= 1.0:
            raise ConfigError(f"sidecar.payload_sample_rate must be in [0, 1], got {self.payload_sample_rate}")
        if self.ready_path is not None and not self.ready_path.startswith("/"):
            raise ConfigError(f"sidecar.ready_path must start with '/', got {self.ready_path!r}")
        if not self.default_version:
            raise ConfigError("sidecar.default_version must not be empty")
        if len(self.attributes) > 16:
            raise ConfigError(f"sidecar.attributes holds at most 16 entries, got {len(self.attributes)}")

    @property
    def upstream_address(self) -> tuple[str, int]:
        """``(host, port)`` of the upstream."""
        parts = urlsplit(self.upstream)
        return parts.hostname or "", parts.port or 80


__all__ = ["ModelRef", "SidecarConfig"]
