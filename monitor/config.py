"""The one typed configuration tree of the daemon, loaded and validated in one place.

A configuration file is YAML (or JSON). Every key has a default except ``models``; unknown keys are
errors, so a typo never silently falls back to a default. Errors name the offending key path:

>>> load_config_text("models: []\\nwindow: {size: -5}")
Traceback (most recent call last):
...
monitor.errors.ConfigError: config: Expected `int` >= 1 at window.size
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

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


class ModelConfig(_Strict, frozen=True):
    """A model version to watch and the reference profile its windows are compared with."""

    name: Name
    version: Name
    profile: str
    training_run: str | None = None
    window_size: Positive | None = None  # overrides window.size for this model

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


class KafkaConfig(_Strict, frozen=True):
    """Consume from Kafka instead of the embedded in-process bus."""

    bootstrap: Name
    group: Name = "inferwatch-detect"
    client_id: Name = "inferwatch"
    create_topics: bool = True
    partitions: Positive = 1


class TopicsConfig(_Strict, frozen=True):
    events: Name = "inferwatch.events"
    feedback: Name = "inferwatch.feedback"
    results: Name = "inferwatch.results"
    deadletter: Name = "inferwatch.deadletter"


class WindowConfig(_Strict, frozen=True):
    """Tumbling windows per model version: a window closes at ``size`` events, or after ``max_seconds``
    of wall time once it holds ``min_samples`` (so a quiet model still gets results)."""

    size: Positive = 500
    max_seconds: PositiveFloat = 300.0
    min_samples: Positive = 30


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


class DetectConfig(_Strict, frozen=True):
    """False-alarm control. ``alpha`` is the per-window family-wise (Bonferroni) or false-discovery (BH)
    level across the features of a window, and the level of every other test. Effect-size floors keep huge
    windows from flagging negligible shifts: a finding needs significance AND an effect at least as large as
    ``min_effect`` (KS statistic of a numeric feature; a 0.1-sd mean shift is about 0.04, while an undrifted
    feature in 10,000-row windows against 100,000 reference rows exceeds 0.025 with probability ~2e-5),
    ``min_effect_categorical`` and ``min_effect_classes`` (Jensen–Shannon distance of category and
    predicted-class frequencies), ``min_effect_quality`` (accuracy drop), ``min_effect_llm``."""

    alpha: Probability = 0.01
    correction: Literal["bonferroni", "bh"] = "bonferroni"
    min_effect: Effect = 0.025
    min_effect_categorical: Effect = 0.02
    min_effect_classes: Effect = 0.02
    min_effect_quality: Effect = 0.02
    min_effect_llm: Effect = 0.05
    embedding: EmbeddingConfig = EmbeddingConfig()
    quality: QualityConfig = QualityConfig()
    slow_drift: SlowDriftConfig = SlowDriftConfig()
    slo: SLOConfig | None = None


class WebhookConfig(_Strict, frozen=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    timeout_s: PositiveFloat = 5.0
    max_attempts: Positive = 5
    backoff_s: PositiveFloat = 0.5


class AlertsConfig(_Strict, frozen=True):
    """An alert fires when ``breaches`` of the last ``of`` windows found a problem (persistence), and resolves
    after ``resolve_after`` consecutive clean windows."""

    breaches: Positive = 2
    of: Positive = 3
    resolve_after: Positive = 2
    webhook: WebhookConfig | None = None


class ServerConfig(_Strict, frozen=True):
    """HTTP server for ``/metrics``, ``/healthz``, ``/readyz`` and, on the embedded bus, event ingest."""

    host: str = "127.0.0.1"
    port: Port = 9464
    max_body_bytes: Positive = 4 * 1024 * 1024


class Config(_Strict, frozen=True):
    models: list[ModelConfig]
    kafka: KafkaConfig | None = None
    topics: TopicsConfig = TopicsConfig()
    window: WindowConfig = WindowConfig()
    detect: DetectConfig = DetectConfig()
    alerts: AlertsConfig = AlertsConfig()
    server: ServerConfig = ServerConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; relative profile paths are resolved against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from exc
    config = load_config_text(text, source=str(p))
    models = [
        msgspec.structs.replace(m, profile=str((p.parent / m.profile).resolve()))
        if not Path(m.profile).is_absolute() else m
        for m in config.models
    ]
    return msgspec.structs.replace(config, models=models)


def load_config_text(text: str, source: str = "config") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    for model in raw.get("models") or []:
        # YAML reads `version: 1` as a number; a version is a name.
        if isinstance(model, dict) and isinstance(model.get("version"), int | float):
            model["version"] = str(model["version"])
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT.search(message)
        where = f" at {match.group('path') or '(top level)'}" if match else ""
        raise ConfigError(f"{source}: {_AT.sub('', message)}{where}") from exc
    if config.alerts.breaches > config.alerts.of:
        raise ConfigError(f"{source}: alerts.breaches ({config.alerts.breaches}) cannot exceed alerts.of "
                          f"({config.alerts.of})")
    keys = [m.key for m in config.models]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"{source}: models lists {', '.join(duplicates)} more than once")
    return config
