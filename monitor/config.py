"""The one typed configuration tree of the daemon, loaded and validated in one place.

A configuration file is YAML (or JSON). Every key has a default except ``models``; unknown keys are
errors, so a typo never silently falls back to a default. Errors name the offending key path:

>>> load_config_text("models: []\\nwindow: {size: -5}")
Traceback (most recent call last):
...
monitor.errors.ConfigError: config: Expected `int` >= 1 at window.size
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from monitor.errors import ConfigError

Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Probability = Annotated[float, msgspec.Meta(gt=0, lt=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every config section: immutable, keyword-only, unknown keys rejected."""


#: A file's path (a token file's, say): read when the component starts, not when the config is loaded.
FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class ModelConfig(_Strict, frozen=True):
    """A model version to watch and the reference profile its windows are compared with.

    Versions of one model served side by side (A/B, canary) say which they are with ``variant`` (the value their
    events carry in ``attributes["variant"]``); each window of such a version is also compared with the last
    window of its peer version: ``compare_with`` when given, else the group's control (see :func:`variant_peers`).
    """

    name: Name
    version: Name
    profile: str
    training_run: str | None = None
    window_size: Positive | None = None  # overrides window.size for this model
    variant: Name | None = None  # e.g. "control", "canary", "A", "B"
    compare_with: Name | None = None  # the version of the same model this one's windows are compared with

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


class KafkaConfig(_Strict, frozen=True):
    """Consume from Kafka instead of the embedded in-process bus.

    ``client`` is the Kafka library under the transport: ``kafka-python`` (the default, always installed) or
    ``confluent`` (confluent-kafka on librdkafka, several times less CPU per record; ``pip install
    'inferwatch[confluent]'``). Both give the daemon the same guarantees; a missing confluent-kafka fails at start.

    ``resume_lookback`` records of each results partition are read back whenever partitions are assigned, to go
    on where the last owner of a model version stopped and not to publish a window twice (see
    :mod:`monitor.pipeline`); it must exceed the windows published between two commits (a few, commits follow
    closed windows within a quarter second).

    A detector that dies holds its partitions until the group misses its heartbeats for ``session_timeout_s``
    (the broker accepts 6-300 s by default). With ``instance_id`` (static membership: a name unique in the
    group and stable across restarts, e.g. the pod's name) a restarted detector takes its partitions back at
    once, without a rebalance.

    ``assignment`` is the group's rebalance protocol: ``eager`` (every member gives up every partition at each
    rebalance) or ``cooperative`` (cooperative-sticky, KIP-429: only the partitions that move are revoked, the
    others keep being read). Every member of a group must use the same one. Either way a detector commits what
    is safe when partitions are revoked, drops its open windows and reads its partitions again from the commits.
    """

    bootstrap: Name
    group: Name = "inferwatch-detect"
    client_id: Name = "inferwatch"
    create_topics: bool = True
    partitions: Positive = 1
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    resume_lookback: Positive = 2000
    session_timeout_s: Annotated[float, msgspec.Meta(ge=6, le=300)] = 10.0
    instance_id: Name | None = None
    assignment: Literal["eager", "cooperative"] = "eager"

    def __post_init__(self) -> None:
        # Looked up without importing it; msgspec reports the ValueError at this section's path (kafka).
        if self.client == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
            raise ValueError("kafka.client is confluent but confluent-kafka is not installed: "
                             "pip install 'inferwatch[confluent]' (or use client: kafka-python)")


class TopicsConfig(_Strict, frozen=True):
    events: Name = "inferwatch.events"
    feedback: Name = "inferwatch.feedback"
    results: Name = "inferwatch.results"
    deadletter: Name = "inferwatch.deadletter"


class WindowConfig(_Strict, frozen=True):
    """Tumbling windows per model version (see :mod:`monitor.windows`), cut by count or by event time.

    By count (``duration_s`` unset): a window closes at ``size`` events, or after ``max_seconds`` of wall time
    once it holds ``min_samples`` (so a quiet model still gets results).

    By event time (``duration_s`` set): a window holds the events of ``duration_s`` seconds of event time
    (aligned to the Unix epoch) and closes when a later event of its version is ``lateness_s`` past its end.
    ``late_events`` says what happens to an event whose window has closed: ``drop`` (counted) or ``next`` (added
    to the first window still open, counted); ``max_rows`` bounds the events one window keeps (more are counted
    and dropped); a version silent for ``max_seconds`` of wall time has its open windows closed. Detectors need
    ``min_samples`` events in a window either way. An event more than ``max_future_s`` ahead of this machine's
    clock is dead-lettered (``future_time``): one bad clock would move the watermark past every open window. In
    both modes a request id seen twice in a window is dropped and counted."""

    size: Positive = 500
    max_seconds: PositiveFloat = 300.0
    min_samples: Positive = 30
    duration_s: PositiveFloat | None = None
    lateness_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    late_events: Literal["drop", "next"] = "drop"
    max_rows: Positive = 100_000
    max_future_s: PositiveFloat = 3600.0


Effect = Annotated[float, msgspec.Meta(ge=0, le=1)]


class EmbeddingConfig(_Strict, frozen=True):
    """MMD on embeddings: a permutation test up to ``linear_above`` pooled rows, the linear-time test above.
    At most ``max_rows`` embeddings of a window are kept (the first ones), which bounds memory and time."""

    permutations: Positive = 100
    max_rows: Positive = 1000
    linear_above: Positive = 20_000


class QualityConfig(_Strict, frozen=True):
    """Quality with labels: feedback joins its inference by request id within ``ttl_s``; at most
    ``max_pending`` unjoined inferences and feedbacks are held (oldest evicted first, counted). Labelled
    quality is evaluated every ``window`` joined labels."""

    ttl_s: PositiveFloat = 86_400.0
    max_pending: Positive = 200_000
    window: Positive = 500


class SlowDriftConfig(_Strict, frozen=True):
    """CUSUM over each window's feature-drift p-value (as a N(0,1) score): catches drifts too slow for any
    single window. The threshold is calibrated so that, with no drift, an alarm comes on average once per
    ``1 / false_alarm_rate`` windows."""

    enabled: bool = True
    false_alarm_rate: Probability = 0.001
    k: PositiveFloat = 0.5


class SLOConfig(_Strict, frozen=True):
    """``objective`` of requests must finish within ``threshold_s`` (total latency)."""

    threshold_s: PositiveFloat
    objective: Probability = 0.99


class VariantsConfig(_Strict, frozen=True):
    """Versions compared with their peer version (``models[].variant``, ``models[].compare_with``): when a window
    of a compared version closes, it is compared with the peer's last closed window if that one ended at most
    ``max_age_s`` (event time) before this window began; of the peer's window at most ``max_rows`` rows are kept
    (a seeded uniform sample). A latency difference needs a median at least ``min_latency_change`` (relative)
    apart besides significance."""

    max_age_s: PositiveFloat = 600.0
    max_rows: Positive = 5000
    min_latency_change: Annotated[float, msgspec.Meta(ge=0)] = 0.1


class DetectConfig(_Strict, frozen=True):
    """False-alarm control. ``alpha`` is the per-window family-wise (Bonferroni) or false-discovery (BH)
    level across the features of a window, and the level of every other test. Effect-size floors keep huge
    windows from flagging negligible shifts: a finding needs significance AND an effect at least as large as
    ``min_effect`` (KS statistic of a numeric feature; a 0.1-sd mean shift is about 0.04, while an undrifted
    feature in 10,000-row windows against 100,000 reference rows exceeds 0.025 with probability ~2e-5),
    ``min_effect_categorical`` and ``min_effect_classes`` (Jensen–Shannon distance of category and
    predicted-class frequencies), ``min_effect_quality`` (accuracy drop), ``min_effect_llm``, and
    ``min_effect_missing`` (Cohen's h of a feature's missing rate: 0.1 is about 5% -> 7.5%, or 0% -> 0.25%).

    A test reports insufficient data only when no outcome of it could be significant at the corrected level
    (e.g. a KS test of m window rows against n reference rows can reach at best p = 2 / C(n+m, m)), never
    below a fixed row count."""

    alpha: Probability = 0.01
    correction: Literal["bonferroni", "bh"] = "bonferroni"
    min_effect: Effect = 0.025
    min_effect_categorical: Effect = 0.02
    min_effect_classes: Effect = 0.02
    min_effect_quality: Effect = 0.02
    min_effect_llm: Effect = 0.05
    min_effect_missing: Annotated[float, msgspec.Meta(ge=0, le=math.pi)] = 0.1
    embedding: EmbeddingConfig = EmbeddingConfig()
    quality: QualityConfig = QualityConfig()
    slow_drift: SlowDriftConfig = SlowDriftConfig()
    slo: SLOConfig | None = None
    variants: VariantsConfig = VariantsConfig()


Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+")]
#: An MLflow tracking server, or a local MLflow store by the absolute path of its sqlite file.
TrackingUri = Annotated[str, msgspec.Meta(pattern=r"^(https?://[^\s/]+|sqlite:////\S+)")]
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")  # in rising order


class WebhookConfig(_Strict, frozen=True):
    """``alerts.webhook``: the shorthand for one unsigned webhook channel (``alerts.channels`` says more)."""

    url: Url
    timeout_s: PositiveFloat = 5.0
    max_attempts: Positive = 5
    backoff_s: PositiveFloat = 0.5
    close_grace_s: PositiveFloat = 5.0


class _Channel(_Strict, frozen=True, tag_field="type"):
    """What every channel may say: which alerts it takes (``min_severity``, ``detectors``: empty = all) and
    how it delivers. Each attempt waits ``timeout_s``; retries (timeouts, connection errors, 408, 429 with its
    ``Retry-After``, 5xx) back off exponentially from ``backoff_s`` with full jitter, each wait at most
    ``max_backoff_s``, until ``max_attempts``; then the notification is dead-lettered with its reason. The
    queue holds ``queue_size`` notifications (full: the oldest is dropped and counted); at shutdown what is
    queued gets ``close_grace_s``."""

    min_severity: Severity = "info"
    detectors: tuple[Name, ...] = ()
    timeout_s: PositiveFloat = 5.0
    max_attempts: Positive = 8
    backoff_s: PositiveFloat = 0.5
    max_backoff_s: PositiveFloat = 60.0
    queue_size: Positive = 1000
    close_grace_s: PositiveFloat = 5.0


class WebhookChannelConfig(_Channel, frozen=True, kw_only=True, tag="webhook"):
    """JSON POST signed per the Standard Webhooks spec with the secrets in ``secret_file`` (one per line: the
    first signs, all are listed during rotation) or the environment variable ``secret_env``; unsigned without."""

    url: Url
    secret_file: str | None = None
    secret_env: Name | None = None


class SlackChannelConfig(_Channel, frozen=True, kw_only=True, tag="slack"):
    """A Slack incoming webhook; its URL is a secret, so it is read from ``url_file`` or ``url_env``."""

    url: Url | None = None
    url_file: str | None = None
    url_env: Name | None = None


class AlertmanagerChannelConfig(_Channel, frozen=True, kw_only=True, tag="alertmanager"):
    """Alertmanager's API v2 (``POST /api/v2/alerts`` under ``url``); firing alerts are posted again every
    ``repost_s`` (Alertmanager forgets alerts that are not re-sent), a resolve posts ``endsAt`` = now."""

    url: Url
    repost_s: PositiveFloat = 60.0


class PagerDutyChannelConfig(_Channel, frozen=True, kw_only=True, tag="pagerduty"):
    """PagerDuty Events API v2: ``trigger`` and ``resolve`` with a ``dedup_key`` from the fingerprint; the
    routing key is a secret, read from ``routing_key_file`` or ``routing_key_env``."""

    url: Url = "https://events.pagerduty.com/v2/enqueue"
    routing_key_file: str | None = None
    routing_key_env: Name | None = None


ChannelConfig = WebhookChannelConfig | SlackChannelConfig | AlertmanagerChannelConfig | PagerDutyChannelConfig


class RuleConfig(_Strict, frozen=True):
    """Overrides for the alerts of one ``detector`` (optionally of one ``model``, by name); the most specific
    rule wins. ``detector: no_data`` fires when a configured model sends nothing for ``after_s``;
    ``detector: no_baseline`` fires (once per model) when events arrive for a version of a configured model that
    has no profile, and resolves after ``after_s`` (default 600) without such events."""

    detector: Name
    model: Name | None = None
    severity: Severity = "warning"
    breaches: Positive | None = None
    of: Positive | None = None
    resolve_after: Positive | None = None
    after_s: PositiveFloat | None = None


class AlertStateConfig(_Strict, frozen=True):
    """Where alert state survives restarts: the file ``path`` on the embedded bus (none: kept in memory only),
    the compacted topic ``topic`` on Kafka (keyed by ``kafka.group/fingerprint``, so groups do not mix)."""

    path: str | None = None
    topic: Name = "inferwatch.alerts"


class AlertsConfig(_Strict, frozen=True):
    """An alert fires when ``breaches`` of the last ``of`` windows found a problem (persistence), is repeated
    every ``renotify_s`` while it keeps firing (0: never), and resolves after ``resolve_after`` consecutive clean
    windows. ``rules`` override this per detector and model; ``channels`` deliver; ``dashboard_url`` and
    ``report_url``, when set, are linked from every alert (``{model}``, ``{version}``, ``{from_ms}``,
    ``{to_ms}``, ``{window_id}`` are filled in)."""

    breaches: Positive = 2
    of: Positive = 3
    resolve_after: Positive = 2
    renotify_s: Annotated[float, msgspec.Meta(ge=0)] = 14400.0
    rules: tuple[RuleConfig, ...] = ()
    channels: tuple[ChannelConfig, ...] = ()
    state: AlertStateConfig = AlertStateConfig()
    dashboard_url: str | None = None
    report_url: str | None = None
    webhook: WebhookConfig | None = None


Uid = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,29}$")]


class GrafanaConfig(_Strict, frozen=True):
    """Grafana beside the alerts: on every firing notification an annotation on the model's dashboard and a
    local snapshot of it with the window's data embedded (its URL goes into the alert's ``snapshot`` link); a
    resolve gets an annotation only. Without this section nothing is sent to Grafana.

    The service-account token (Editor role) is read at start from ``token_file`` (first line) or the
    environment variable ``token_env``. Dashboards are ``{dashboard_uid_prefix}-classifier`` and
    ``-generator``; one that is missing is created in ``folder`` on first use (``inferwatch dashboards push``
    provisions all three ahead), with the Prometheus data source at ``datasource_url`` when given. Snapshots
    expire after ``snapshot_expires_s`` (0: never). Each request waits ``timeout_s``; connection errors,
    timeouts, 429 and 5xx are retried with exponential backoff from ``backoff_s`` up to ``max_attempts``; at
    most ``queue_size`` alerting windows wait for the worker (full: the oldest is dropped and counted)."""

    url: Url
    token_file: str | None = None
    token_env: Name | None = None
    dashboard_uid_prefix: Uid = "inferwatch"
    folder: Name = "inferwatch"
    datasource_url: Url | None = None
    snapshot_expires_s: Annotated[int, msgspec.Meta(ge=0)] = 30 * 86_400
    timeout_s: PositiveFloat = 5.0
    max_attempts: Positive = 4
    backoff_s: PositiveFloat = 0.5
    queue_size: Positive = 100
    close_grace_s: PositiveFloat = 5.0


class ReportsConfig(_Strict, frozen=True):
    """An Evidently report per alerting window (``pip install 'inferwatch[reports]'``), off while ``dir`` is unset.

    A background worker compares a seeded uniform sample of at most ``reference_rows`` of the profile's reference
    with at most ``window_rows`` of the window's rows (data drift; classification quality on the labels joined
    during the window) and writes ``{dir}/{model}/{version}/{window}.html``; the daemon serves it at
    ``{base_url}/reports/{model}/{version}/{window}.html`` and links it from the alert (unless
    ``alerts.report_url`` is set). Beyond ``max_reports`` files or ``max_bytes``, the oldest are deleted. At most
    ``queue_size`` windows wait for the worker (full: the oldest is dropped and counted). ``base_url`` defaults
    to ``http://{server.host}:{server.port}`` (the machine's hostname when the server listens on all addresses)."""

    dir: str | None = None
    max_reports: Positive = 200
    max_bytes: Positive = 2 << 30
    reference_rows: Positive = 5000
    window_rows: Positive = 10_000
    base_url: Url | None = None
    queue_size: Positive = 8


class RunsConfig(_Strict, frozen=True):
    """What goes back to the training runs models were trained in (off by default).

    With ``log_window_samples``, every alerting window of a model whose run is known (the profile was built with
    ``inferwatch baseline --from-run``, or ``models[].training_run`` names a run by its tracker) is logged to that
    run as ``inferwatch/windows/{window}.npz``: a seeded uniform sample of at most ``max_rows`` of its rows
    (features, feature names, predictions, row places; the raw payloads collectors sampled and redacted), so the
    next training run can include the data that drifted; the alert links it. A background worker logs it (at
    most ``queue_size`` windows wait; beyond, the oldest is dropped and counted); ``timeout_s`` bounds each
    request to the tracker, ``tracking_uri`` serves
    ``runs:/RUN_ID``."""

    log_window_samples: bool = False
    max_rows: Positive = 2000
    queue_size: Positive = 8
    timeout_s: PositiveFloat = 10.0
    tracking_uri: TrackingUri | None = None


class ServerConfig(_Strict, frozen=True):
    """HTTP server for ``/metrics``, ``/healthz``, ``/readyz`` and, on the embedded bus, event ingest.

    ``read_timeout_s`` bounds the time to receive a request body (answered 408, never queued) and how long an
    idle connection is kept; ``max_connections`` bounds the connections served at once (more are answered
    503); ``backlog`` is the listen queue of connections not yet accepted.

    Who may send (see :mod:`monitor.auth`): with ``token_file`` (a file whose first non-empty line is the token, at
    least 16 visible ASCII characters, e.g. ``openssl rand -hex 32``), every request except ``GET /healthz`` and
    ``/readyz`` must carry ``Authorization: Bearer <token>`` (ingest, ``/metrics``, the status page, reports);
    others are answered 401 before their body is read, and counted in
    ``inferwatch_http_unauthorized_total{reason}``. When ``host`` is not loopback (``127.0.0.0/8``, ``::1``,
    ``localhost``; ``0.0.0.0`` and ``::`` are not), the daemon refuses to start without ``token_file`` unless
    ``allow_unauthenticated: true`` says, explicitly, that anyone who can reach it may send (a warning is logged;
    for a service mesh or NetworkPolicy that already limits callers). The server speaks plain HTTP: terminate TLS
    in front of it (docs/operations.md, "Who may send: tokens and TLS")."""

    host: str = "127.0.0.1"
    port: Port = 9464
    max_body_bytes: Positive = 4 * 1024 * 1024
    read_timeout_s: PositiveFloat = 10.0
    max_connections: Positive = 256
    backlog: Positive = 1024
    token_file: FilePath | None = None
    allow_unauthenticated: bool = False


class ModelRef(_Strict, frozen=True, kw_only=False):
    """The monitored identity (model, version) of a model name as the upstream server knows it."""

    model: Name
    version: Name


class SidecarConfig(_Strict, frozen=True):
    """``inferwatch sidecar``: where it listens, what it proxies to, how much it captures, where events go.

    Read from the ``sidecar:`` section of a config file by :func:`load_sidecar_config` (command-line flags
    override the file). The sidecar starts serving at once; while Kafka (or the daemon's ingest) is unreachable,
    events go to the spool.

    Attributes
    ----------
    upstream : ``http://host:port`` of the model server in the same pod (no TLS inside the pod).
    listen_host, listen_port : the proxy listener that clients call instead of the model server.
    admin_host, admin_port : a separate listener for ``/healthz``, ``/readyz`` and ``/metrics``; separate so the
        model server's own ``/metrics`` and health routes (vLLM, Triton, KServe all have them) stay reachable
        through the proxy unchanged.
    kafka : ``host:port[,host:port...]`` of the Kafka cluster events go to. ``inferwatch sidecar`` needs exactly one
        of ``kafka`` and ``ingest``.
    ingest : ``http://host:port`` (or ``https://``, with an optional path prefix) of a daemon on the embedded bus:
        each record is ``POST``-ed to ``{ingest}/v1/events`` instead of going to Kafka, with the same spool and
        drop accounting (see :class:`collectors.ingest.HttpIngestProducer`).
    ingest_token_file : file whose first non-empty line is the bearer token sent to the daemon's ingest (the
        daemon's ``server.token_file`` holds the same token); read at start, and again when the daemon answers 401.
    admin_token_file : file holding the token the admin listener requires on every path but the probes
        (``/metrics`` above all); ``GET``/``HEAD`` ``/healthz`` and ``/readyz`` never need one.
    allow_unauthenticated : when ``admin_host`` is not loopback (``0.0.0.0``, the default, is not), the sidecar
        refuses to start without ``admin_token_file`` unless this is ``true`` (then it logs a warning).
    topic : topic for events.
    client_id : the Kafka client id.
    spool : folder of the on-disk spool used while Kafka (or the ingest) is unreachable (``None``: no spool, such
        events are dropped and counted).
    spool_max_bytes : bound on the spool's size; beyond it events are dropped and counted (``spool_full``).
    queue_capacity : events held in memory on their way to Kafka or the spool; beyond it they are dropped.
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
    attributes : bounded attributes (pod, variant) put on every event (at most 16).
    encoding : how events go to Kafka: ``columns`` (a model version's classifier events as one
        ``inferwatch.columns/v1`` column batch per record, which the detector decodes into arrays; events that do
        not fit, such as generations or sampled payloads, in batch envelopes) or ``rows`` (batch envelopes
        only, ``inferwatch.batch/v1``, for consumers that read nothing else).
    text_features : a completion's event carries features of its prompt and completion computed from the text
        alone (lengths, character mix) and the prompt's 256-dim hashed character 3-gram embedding, so prompt and
        output drift are found without a model in the sidecar (``collectors.text_features``). The embedding is a
        lossy hash, not the text, but short prompts' n-grams can be guessed from it: turn this off where even that
        must not leave the pod.
    """

    upstream: str = "http://127.0.0.1:8080"
    listen_host: str = "0.0.0.0"
    listen_port: Port = 8000
    admin_host: str = "0.0.0.0"
    admin_port: Port = 9400
    kafka: Name | None = None
    ingest: Name | None = None
    ingest_token_file: FilePath | None = None
    admin_token_file: FilePath | None = None
    allow_unauthenticated: bool = False
    topic: Name = "inferwatch.events"
    client_id: Name = "inferwatch-sidecar"
    spool: str | None = None
    spool_max_bytes: Positive = 1 << 30
    queue_capacity: Positive = 100_000
    models: dict[str, ModelRef] = {}
    default_version: Name = "unknown"
    capture_max_bytes: Positive = 1024 * 1024
    connect_timeout_s: PositiveFloat = 2.0
    response_timeout_s: PositiveFloat = 60.0
    idle_timeout_s: PositiveFloat = 60.0
    max_connections: Positive = 1024
    upstream_pool_size: Positive = 64
    max_head_bytes: Positive = 64 * 1024
    ready_path: str | None = None
    payload_sample_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    payload_max_chars: Positive = 4096
    attributes: Annotated[dict[str, str], msgspec.Meta(max_length=16)] = {}
    encoding: Literal["columns", "rows"] = "columns"
    text_features: bool = True

    def __post_init__(self) -> None:
        # What the field types cannot say (they are checked when a file is loaded).
        parts = urlsplit(self.upstream)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ConfigError(f"upstream must look like http://host:port, got {self.upstream!r} at sidecar.upstream")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError as exc:
            raise ConfigError(f"upstream has an invalid port: {exc} at sidecar.upstream") from exc
        for key in ("connect_timeout_s", "response_timeout_s", "idle_timeout_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"Expected a finite number of seconds > 0, got {value} at sidecar.{key}")
        if self.ready_path is not None and not self.ready_path.startswith("/"):
            raise ConfigError(f"ready_path must start with '/', got {self.ready_path!r} at sidecar.ready_path")
        if self.kafka is not None and self.ingest is not None:
            raise ConfigError("give one of kafka and ingest, not both: events go to Kafka or to a daemon's HTTP "
                              "ingest at sidecar.ingest")
        if self.ingest is not None:
            ingest = urlsplit(self.ingest)
            try:
                ingest.port  # noqa: B018 - raises on a port that is not a number in range
            except ValueError as exc:
                raise ConfigError(f"ingest has an invalid port: {exc} at sidecar.ingest") from exc
            if ingest.scheme not in ("http", "https") or not ingest.hostname or ingest.query or ingest.fragment \
                    or ingest.username is not None:
                raise ConfigError(f"ingest must look like http://host:port (the daemon's server), got "
                                  f"{self.ingest!r} at sidecar.ingest")
        if self.ingest_token_file is not None and self.ingest is None:
            raise ConfigError("ingest_token_file is the token sent to a daemon's HTTP ingest: it needs sidecar.ingest "
                              "at sidecar.ingest_token_file")

    @property
    def upstream_address(self) -> tuple[str, int]:
        """``(host, port)`` of the upstream."""
        parts = urlsplit(self.upstream)
        return parts.hostname or "", parts.port or 80


class Config(_Strict, frozen=True):
    models: list[ModelConfig]
    kafka: KafkaConfig | None = None
    topics: TopicsConfig = TopicsConfig()
    window: WindowConfig = WindowConfig()
    detect: DetectConfig = DetectConfig()
    alerts: AlertsConfig = AlertsConfig()
    server: ServerConfig = ServerConfig()
    sidecar: SidecarConfig | None = None  # read by `inferwatch sidecar` (load_sidecar_config), not the daemon
    grafana: GrafanaConfig | None = None  # annotations and snapshots on alerts
    reports: ReportsConfig = ReportsConfig()  # Evidently reports on alerting windows
    runs: RunsConfig = RunsConfig()  # alerting windows logged back to the training runs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: after SIGTERM or SIGINT the daemon finishes the poll in hand, publishes what closed, commits, delivers
    #: queued alerts and closes; if that takes longer than this, it logs so and exits with status 1 (on Kafka
    #: nothing is lost: what was not committed is read again by the next run)
    shutdown_grace_s: PositiveFloat = 30.0


def default_of(section: type[msgspec.Struct], field: str) -> Any:
    """The default of ``section.field``, for a constructor that must agree with the config: each default is
    declared once, here.

    >>> default_of(SidecarConfig, "queue_capacity")
    100000
    """
    for f in msgspec.structs.fields(section):
        if f.name == field:
            if f.default is msgspec.NODEFAULT:
                raise KeyError(f"{section.__name__}.{field} has no default")
            return f.default
    raise KeyError(f"{section.__name__} has no field {field!r}")


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def load_config(path: str | Path) -> Config:
    """Read and validate a daemon's config file; relative profile paths are resolved against its folder.

    A daemon with nothing to watch is refused: ``models`` must list at least one model."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    config = load_config_text(text, source=str(p))
    if not config.models:
        raise ConfigError(f"{p}: models is empty: list at least one model to watch at models")
    models = [
        msgspec.structs.replace(m, profile=str((p.parent / m.profile).resolve()))
        if not Path(m.profile).is_absolute() else m
        for m in config.models
    ]
    return msgspec.structs.replace(config, models=models)


def check_alerts(alerts: AlertsConfig, source: str = "config") -> None:
    """What the types cannot say about ``alerts``: persistence that can be met, one secret source per channel."""
    if alerts.breaches > alerts.of:
        raise ConfigError(f"{source}: alerts.breaches ({alerts.breaches}) cannot exceed alerts.of ({alerts.of})")
    for i, rule in enumerate(alerts.rules):
        breaches, of = rule.breaches or alerts.breaches, rule.of or alerts.of
        if breaches > of:
            raise ConfigError(f"{source}: alerts.rules[{i}]: breaches ({breaches}) cannot exceed of ({of})")
        if rule.detector == "no_data" and rule.after_s is None:
            raise ConfigError(f"{source}: alerts.rules[{i}].after_s: a no_data rule needs after_s (seconds of "
                              "silence)")
        if rule.detector not in ("no_data", "no_baseline") and rule.after_s is not None:
            raise ConfigError(f"{source}: alerts.rules[{i}].after_s: after_s applies to no_data and no_baseline "
                              f"rules only, not {rule.detector}")
    secrets = {"webhook": ("secret_file", "secret_env"), "slack": ("url", "url_file", "url_env"),
               "pagerduty": ("routing_key_file", "routing_key_env")}
    for i, channel in enumerate(alerts.channels):
        kind = channel.__struct_config__.tag
        given = [k for k in secrets.get(str(kind), ()) if getattr(channel, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"{source}: alerts.channels[{i}]: give one of {', '.join(given)}, not several")
        if kind in ("slack", "pagerduty") and not given:
            raise ConfigError(f"{source}: alerts.channels[{i}]: a {kind} channel needs one of "
                              f"{', '.join(secrets[str(kind)])}")


def check_reports(reports: ReportsConfig, source: str = "config") -> None:
    """Reports need evidently (and pandas < 3, which evidently 0.7 needs): refused at start, not on the first
    alert. Looked up without importing them (evidently takes seconds to import)."""
    if reports.dir is None:
        return
    problem = report_packages_problem()
    if problem is not None:
        raise ConfigError(f"{source}: reports.dir is set but {problem}: pip install 'inferwatch[reports]' "
                          f"(or remove reports.dir) at reports.dir")


def report_packages_problem() -> str | None:
    """What keeps reports from being built in this environment, or None."""
    import importlib.metadata
    import importlib.util

    for package in ("evidently", "pandas"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
    pandas = importlib.metadata.version("pandas")
    if int(pandas.split(".", 1)[0]) >= 3:
        return f"evidently 0.7 needs pandas < 3, and pandas {pandas} is installed"
    return None


def load_alerts_config(path: str | Path) -> AlertsConfig:
    """An ``alerts:`` section from its own YAML file (the file holds ``alerts:``, or the section's keys)."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read alerts config {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if isinstance(raw, dict) and set(raw) == {"alerts"}:
        raw = raw["alerts"]
    return load_config_text(yaml.safe_dump({"models": [], "alerts": raw or {}}), source=str(p)).alerts


def load_config_text(text: str, source: str = "config") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    for model in raw.get("models") or []:
        # YAML reads `version: 1` as a number; a version is a name.
        for key in ("version", "compare_with"):
            if isinstance(model, dict) and isinstance(model.get(key), int | float):
                model[key] = str(model[key])
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT.search(message)
        where = f" at {match.group('path') or '(top level)'}" if match else ""
        raise ConfigError(f"{source}: {_AT.sub('', message)}{where}") from exc
    check_alerts(config.alerts, source)
    check_reports(config.reports, source)
    if config.grafana is not None and (config.grafana.token_file is None) == (config.grafana.token_env is None):
        raise ConfigError(f"{source}: grafana: give one of token_file, token_env (a service-account token) at "
                          f"grafana.token_file")
    keys = [m.key for m in config.models]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"{source}: models lists {', '.join(duplicates)} more than once")
    check_variants(config.models, source)
    return config


#: Variants that name a comparison group's control: the version the other variants are compared with by default.
CONTROL_VARIANTS = frozenset({"control", "a", "baseline", "stable"})


def check_variants(models: list[ModelConfig], source: str = "config") -> None:
    """What the types cannot say about ``models[].variant`` and ``models[].compare_with``: a peer is another
    configured version of the same model, and no two versions of a model share a variant."""
    for i, m in enumerate(models):
        versions = [o.version for o in models if o.name == m.name]
        if m.compare_with is not None and m.compare_with == m.version:
            raise ConfigError(f"{source}: {m.key} cannot be compared with itself at models[{i}].compare_with")
        if m.compare_with is not None and m.compare_with not in versions:
            raise ConfigError(f"{source}: {m.name} has no configured version {m.compare_with!r} to compare "
                              f"{m.key} with (configured: {', '.join(versions)}) at models[{i}].compare_with")
        twin = next((o for o in models[:i] if o.name == m.name and m.variant is not None and o.variant == m.variant),
                    None)
        if twin is not None:
            raise ConfigError(f"{source}: {m.key} and {twin.key} are both variant {m.variant!r}; each version of "
                              f"a model needs its own variant at models[{i}].variant")


def variant_peers(models: list[ModelConfig]) -> dict[str, str]:
    """The version each compared version's windows are compared with, as ``{key: peer key}``.

    ``compare_with`` names the peer explicitly. Otherwise versions of one model that have a ``variant`` form a
    group (when there are two or more): each is compared with the group's control, the first listed whose
    variant is one of :data:`CONTROL_VARIANTS` (any case), or else the first listed; the control itself is
    compared with nothing.

    >>> models = [ModelConfig(name="m", version=v, profile="p", variant=n)
    ...           for v, n in (("1", "stable"), ("2", "canary"), ("3", None))]
    >>> variant_peers(models)
    {'m/2': 'm/1'}
    """
    peers = {m.key: f"{m.name}/{m.compare_with}" for m in models if m.compare_with is not None}
    groups: dict[str, list[ModelConfig]] = {}
    for m in models:
        if m.variant is not None:
            groups.setdefault(m.name, []).append(m)
    for group in groups.values():
        if len(group) < 2:
            continue
        control = next((m for m in group if str(m.variant).lower() in CONTROL_VARIANTS), group[0])
        for m in group:
            if m is not control and m.compare_with is None:
                peers[m.key] = control.key
    return peers


def load_sidecar_config(path: str | Path | None = None,
                        overrides: Mapping[str, object] | None = None) -> SidecarConfig:
    """The ``sidecar:`` section of a config file (only that section is read), with ``overrides`` on top.

    ``overrides`` are the command line's values, by key (``models`` entries are added to the file's); the
    result is validated once, and an error names the key (``config.yaml: ... at sidecar.listen_port``). A
    relative ``spool`` folder or token file in the file is resolved against the file's folder. Without ``path``, the
    defaults with ``overrides``.
    """
    source = str(path) if path is not None else "command line"
    section: dict[str, object] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from exc
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("sidecar"), dict):
            raise ConfigError(f"{source}: expected a `sidecar:` mapping at the top level")
        section = dict(raw["sidecar"])
        for key in ("spool", "ingest_token_file", "admin_token_file"):
            value = section.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                section[key] = str((p.parent / value).resolve())
        models = section.get("models")
        for ref in models.values() if isinstance(models, dict) else ():
            # YAML reads `version: 1` as a number; a version is a name.
            if isinstance(ref, dict) and isinstance(ref.get("version"), int | float):
                ref["version"] = str(ref["version"])
    for key, value in (overrides or {}).items():
        if key == "models" and isinstance(value, Mapping) and isinstance(section.get("models"), dict):
            section["models"] = {**section["models"], **value}  # type: ignore[dict-item]
        else:
            section[key] = value
    try:
        return msgspec.convert(section, SidecarConfig)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT.search(message)
        where = f" at sidecar.{match.group('path')}" if match and match.group("path") else " at sidecar"
        raise ConfigError(f"{source}: {_AT.sub('', message)}{where}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
