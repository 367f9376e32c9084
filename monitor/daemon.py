"""``inferwatch run``: wire the configured transport, profiles, server, channels and pipeline; stop on SIGTERM.

Shutdown order (SIGTERM or SIGINT): stop consuming, commit what no open window needs (open windows are
replayed by the next run), deliver queued alerts, close the transport, stop the HTTP server.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry

from monitor.alerts import Channel, WebhookChannel
from monitor.config import Config
from monitor.errors import ProfileError
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline
from monitor.profiles import Profile, load_profile
from monitor.server import DaemonServer
from monitor.transport import KafkaTransport, MemoryBus, Transport, ensure_topics, wait_until_ready

log = logging.getLogger("inferwatch")


def load_profiles(config: Config) -> dict[str, Profile]:
    """Load every configured profile, failing at start (not on the first event) when one is wrong."""
    profiles = {}
    for m in config.models:
        profile = load_profile(m.profile)
        if (profile.model, profile.version) != (m.name, m.version):
            log.warning("profile %s was built for %s/%s, used for %s", m.profile, profile.model, profile.version,
                        m.key)
        if not profile.feature_names:
            raise ProfileError(f"profile {m.profile} for {m.key} has no features")
        profiles[m.key] = profile
    return profiles


def build_transport(config: Config) -> Transport:
    if config.kafka is None:
        return MemoryBus()
    k = config.kafka
    wait_until_ready(k.bootstrap, timeout_s=30)
    if k.create_topics:
        t = config.topics
        ensure_topics(k.bootstrap, {t.events: k.partitions, t.feedback: k.partitions, t.results: k.partitions,
                                    t.deadletter: 1})
    return KafkaTransport(k.bootstrap, client_id=k.client_id)


def run_daemon(config: Config, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    profiles = load_profiles(config)
    registry = CollectorRegistry()
    metrics = daemon_metrics(registry)
    transport = build_transport(config)
    producer = transport.producer()
    consumer = transport.consumer([config.topics.events, config.topics.feedback],
                                  config.kafka.group if config.kafka else "inferwatch-detect")
    embedded = config.kafka is None
    server = DaemonServer(config.server.host, config.server.port, registry, ready=lambda: not stop.is_set(),
                          ingest=producer if embedded else None,
                          topics={"events": config.topics.events, "feedback": config.topics.feedback},
                          max_body_bytes=config.server.max_body_bytes)
    channels: list[Channel] = []
    if config.alerts.webhook is not None:
        w = config.alerts.webhook
        channels.append(WebhookChannel(w.url, metrics, timeout_s=w.timeout_s, max_attempts=w.max_attempts,
                                       backoff_s=w.backoff_s))
    pipeline = Pipeline(config, profiles, consumer, producer, metrics, channels)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.start()
    source = f"Kafka at {config.kafka.bootstrap}" if config.kafka else \
        f"the embedded bus (POST events to http://{config.server.host}:{server.port}/v1/events)"
    log.info("inferwatch watching %s from %s; metrics on http://%s:%d/metrics",
             ", ".join(profiles), source, config.server.host, server.port)
    started = time.monotonic()
    try:
        pipeline.run(stop)
    finally:
        for channel in channels:
            channel.close()
        consumer.close()
        producer.close(timeout_s=10)
        transport.close()
        server.close()
    log.info("stopped after %.0f s: %d records consumed", time.monotonic() - started, pipeline.messages)
    return 0
