"""One place that wires a detection pipeline from a :class:`~monitor.config.Config`.

:func:`build_pipeline` makes the transport (Kafka, or the embedded in-process bus), its producer and consumer,
the metrics on a registry, the alert channels and the :class:`~monitor.pipeline.Pipeline` that joins them.
``inferwatch run`` (:mod:`monitor.daemon`) and both demos (:mod:`monitor.demo`) call it, so they watch models
the same way; what differs is only who runs the loop and what feeds the transport.

:meth:`Wiring.close` shuts the parts down in the one safe order: stop consuming (the pipeline commits what no
open window needs, and on the embedded bus evaluates the open windows), deliver the queued alerts, then close
the consumer, the producer and the transport.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from prometheus_client import CollectorRegistry

from monitor.alerts import (
    Alert,
    AlertHook,
    Alerting,
    AlertMetrics,
    AlertRules,
    Channel,
    FileStore,
    MemoryStore,
    StateStore,
    build_channels,
)
from monitor.config import Config, variant_peers
from monitor.errors import ProfileError
from monitor.evaluation import WindowResult
from monitor.metrics import DaemonMetrics, daemon_metrics
from monitor.pipeline import Pipeline
from monitor.profiles import Profile, load_profile
from monitor.reports import ReportHook
from monitor.runs import run_url
from monitor.status import StatusBoard, WatchedModelInfo
from monitor.transport import (
    ConfluentTransport,
    Consumer,
    KafkaTransport,
    MemoryBus,
    Producer,
    Transport,
    ensure_topics,
    read_tail,
    wait_until_ready,
)

__all__ = ["Wiring", "build_pipeline", "build_transport", "load_profiles"]

log = logging.getLogger("inferwatch")

#: The consumer group on the embedded bus (on Kafka it is ``kafka.group``).
EMBEDDED_GROUP = "inferwatch-detect"
#: How long :func:`build_transport` waits for a Kafka cluster to answer at start.
KAFKA_READY_TIMEOUT_S = 30.0


def load_profiles(config: Config) -> dict[str, Profile]:
    """Load every configured profile, failing at start (not on the first event) when one is wrong."""
    profiles = {}
    for m in config.models:
        profile = load_profile(m.profile)
        if (profile.model, profile.version) != (m.name, m.version):
            log.warning("profile %s was built for %s/%s, used for %s", m.profile, profile.model, profile.version,
                        m.key)
        if not profile.feature_names and profile.llm is None:  # a generator's profile may hold outputs only
            raise ProfileError(f"profile {m.profile} for {m.key} has neither input features nor LLM outputs")
        profiles[m.key] = profile
    return profiles


#: Bytes of consumed records (and of the results and dead letters, which nothing in-process reads) the embedded
#: bus keeps per partition; the backlog a slow detector may build stays 64 MiB.
EMBEDDED_RETAIN_BYTES = 4 << 20


def build_transport(config: Config, registry: CollectorRegistry | None = None) -> Transport:
    """The in-process bus without ``kafka:``; else a Kafka transport on ``kafka.client``'s library, once the
    cluster answers (topics created when ``kafka.create_topics``)."""
    if config.kafka is None:  # what every reader has consumed is kept up to 4 MiB: nothing reads it again
        return MemoryBus(retain_bytes_per_partition=EMBEDDED_RETAIN_BYTES)
    k = config.kafka
    # Made first (it connects nothing yet), so that a missing confluent-kafka fails before the wait for the broker.
    session_ms, heartbeat_ms = int(k.session_timeout_s * 1000), int(k.session_timeout_s * 1000 / 4)
    if k.client == "confluent":
        membership: dict[str, object] = {"session.timeout.ms": session_ms, "heartbeat.interval.ms": heartbeat_ms}
        if k.instance_id is not None:
            membership["group.instance.id"] = k.instance_id
        if k.assignment == "cooperative":
            membership["partition.assignment.strategy"] = "cooperative-sticky"
        transport: Transport = ConfluentTransport(k.bootstrap, client_id=k.client_id, registry=registry,
                                                  extra_consumer=membership)
    else:
        membership = {"session_timeout_ms": session_ms, "heartbeat_interval_ms": heartbeat_ms}
        if k.instance_id is not None:
            membership["group_instance_id"] = k.instance_id
        if k.assignment == "cooperative":
            membership["partition_assignment_strategy"] = (CooperativeStickyAssignor,)
        transport = KafkaTransport(k.bootstrap, client_id=k.client_id, registry=registry, extra_consumer=membership)
    wait_until_ready(k.bootstrap, timeout_s=KAFKA_READY_TIMEOUT_S)
    if k.create_topics:
        t = config.topics
        ensure_topics(k.bootstrap, {t.events: k.partitions, t.feedback: k.partitions, t.results: k.partitions,
                                    t.deadletter: 1})
    return transport


@dataclass(frozen=True)
class Wiring:
    """The parts of a running detection pipeline, and their shutdown.

    Run the loop in the calling thread with :meth:`run` (the daemon) or in a background thread with
    :meth:`start` (the demos); either way, :meth:`close` ends it (``stop`` may also be set from outside,
    by a signal handler) and then closes the parts.
    """

    config: Config
    transport: Transport
    producer: Producer
    consumer: Consumer
    registry: CollectorRegistry
    metrics: DaemonMetrics
    alerting: Alerting
    pipeline: Pipeline
    status: StatusBoard
    stop: threading.Event = field(default_factory=threading.Event)
    reports: ReportHook | None = None  # with reports.dir: serve report_page(reports.store) under /reports/
    _threads: list[threading.Thread] = field(default_factory=list, init=False, repr=False)  # from start()
    _closed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def run(self) -> None:
        """Run the pipeline in this thread until :attr:`stop` is set."""
        self.pipeline.run(self.stop)

    def start(self) -> threading.Thread:
        """Run the pipeline in a background thread until :meth:`close` (or :attr:`stop`)."""
        thread = threading.Thread(target=self.run, name="inferwatch-pipeline", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    @property
    def running(self) -> bool:
        """Whether the background loop of :meth:`start` is running."""
        return any(thread.is_alive() for thread in self._threads)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop consuming, deliver queued alerts, close the consumer, the producer, the transport.

        Each step that waits gets ``timeout_s``; a pipeline thread still running after its wait is logged (its
        consumer is then closed under it, which ends it). A second call does nothing."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("the pipeline did not stop within %.0f s; closing its consumer under it", timeout_s)
        self.alerting.close(timeout_s=timeout_s)
        self.consumer.close()
        self.producer.close(timeout_s=timeout_s)
        self.transport.close()


def build_alerting(config: Config, registry: CollectorRegistry, producer: Producer,
                   extra: Sequence[Channel] = (), hooks: Sequence[AlertHook] = ()) -> Alerting:
    """Rules with their saved state, the configured channels (then ``extra``) and ``hooks``; undeliverable
    notifications go to the dead-letter topic with reason ``alert_undeliverable``."""
    def dead_letter(alert: Alert, channel: str, problem: str) -> None:
        producer.send(config.topics.deadletter, alert.to_json(), alert.fingerprint.encode(), [
            ("inferwatch_reason", b"alert_undeliverable"), ("inferwatch_detail", problem[:1000].encode()),
            ("inferwatch_origin", f"alerts/{channel}".encode())])

    store: StateStore
    if config.kafka is not None:
        from monitor.alerts.topic_state import TopicStore
        store = TopicStore(config.kafka.bootstrap, config.alerts.state.topic, namespace=config.kafka.group)
    elif config.alerts.state.path is not None:
        store = FileStore(config.alerts.state.path)
    else:
        store = MemoryStore()
        if config.alerts.channels or config.alerts.webhook is not None:
            log.warning("alerts.state.path is not set: alert state lives in memory, so a restart forgets firing "
                        "alerts (they fire again, and the ones that end are never resolved)")
    metrics = AlertMetrics(registry)
    try:
        rules = AlertRules(config.alerts, store)
        channels = [*build_channels(config.alerts, metrics, dead_letter), *extra]
    except BaseException:
        store.close()
        raise
    return Alerting(rules, channels, metrics, models=[(m.name, m.version) for m in config.models], hooks=hooks)


def build_pipeline(config: Config, profiles: Mapping[str, Profile] | None = None, *,
                   channels: Sequence[Channel] = (), on_result: Callable[[WindowResult], None] | None = None,
                   hooks: Sequence[AlertHook] = (),
                   registry: CollectorRegistry | None = None, stop: threading.Event | None = None) -> Wiring:
    """Wire transport, profiles, metrics, alert channels and the pipeline for ``config``.

    Parameters
    ----------
    config : Config
        The daemon's configuration; ``kafka`` chooses the transport, ``alerts.webhook`` adds a webhook channel,
        ``grafana`` the Grafana hook (annotations and snapshots, :mod:`monitor.grafana`), ``reports.dir`` the
        report hook (an Evidently report per alerting window, :mod:`monitor.reports`), ``runs.log_window_samples``
        the hook that logs each alerting window's rows to the model's training run (:mod:`monitor.runs.samples`).
    profiles : mapping of ``model/version`` to Profile, optional
        Reference profiles already in memory (the demos build theirs); by default each model's ``profile`` file
        is loaded (:func:`load_profiles`).
    channels : sequence of Channel
        Alert channels beside the configured ones (the demos collect alerts in a
        :class:`~monitor.alerts.MemoryChannel`).
    on_result : callable, optional
        Called with every window result.
    hooks : sequence of AlertHook
        Alert hooks beside the configured ones (the demo records what it would send to Grafana).
    registry : CollectorRegistry, optional
        Where the metrics are made (a new registry by default).
    stop : threading.Event, optional
        Ends the loop when set (a new event by default); :meth:`Wiring.close` sets it.
    """
    profiles = load_profiles(config) if profiles is None else profiles
    registry = CollectorRegistry() if registry is None else registry
    metrics = daemon_metrics(registry)
    transport = build_transport(config, registry)
    producer = transport.producer()
    consumer = transport.consumer([config.topics.events, config.topics.feedback],
                                  config.kafka.group if config.kafka else EMBEDDED_GROUP)
    alerting: Alerting | None = None
    hooks = list(hooks)
    reports: ReportHook | None = None
    try:
        if config.grafana is not None:  # without it, nothing is sent to Grafana
            from monitor.grafana import grafana_hook
            hooks.append(grafana_hook(config.grafana, registry, profiles))
        if config.reports.dir is not None:  # Evidently reports on alerting windows, served under /reports/
            reports = ReportHook.from_config(config.reports, config.server, profiles, registry,
                                             link=config.alerts.report_url is None)
            hooks.append(reports)
        if config.runs.log_window_samples:  # alerting windows logged back to the models' training runs
            from monitor.runs.samples import RunSampleHook
            hooks.append(RunSampleHook.from_config(config, profiles, registry))
        alerting = build_alerting(config, registry, producer, channels, hooks)
        peers = variant_peers(config.models)
        status = StatusBoard([_model_info(m.name, m.version, m.profile, m.training_run, profiles.get(m.key),
                                          m.variant, peers.get(m.key))
                              for m in config.models],
                             firing=lambda: alerting.rules.firing if alerting is not None else (),
                             dashboard_url=config.alerts.dashboard_url)

        def on_window(result: WindowResult) -> None:
            status.add(result)
            if on_result is not None:
                on_result(result)

        tail = None if config.kafka is None else \
            partial(read_tail, config.kafka.bootstrap, config.topics.results, config.kafka.resume_lookback)
        pipeline = Pipeline(config, profiles, consumer, producer, metrics, alerting=alerting, on_result=on_window,
                            results_tail=tail)
    except BaseException:  # nothing half-built is left running
        if alerting is not None:
            alerting.close(timeout_s=0)
        for hook in hooks if alerting is None else ():
            hook.close(timeout_s=0)
        consumer.close()
        producer.close(timeout_s=0)
        transport.close()
        raise
    return Wiring(config=config, transport=transport, producer=producer, consumer=consumer, registry=registry,
                  metrics=metrics, alerting=alerting, pipeline=pipeline, status=status,
                  stop=threading.Event() if stop is None else stop, reports=reports)


def _model_info(model: str, version: str, profile_path: str, training_run: str | None,
                profile: Profile | None, variant: str | None = None, peer: str | None = None) -> WatchedModelInfo:
    run = training_run or (None if profile is None else profile.training_run)
    return WatchedModelInfo(model, version, profile_path, run,
                            run_url(run, None if profile is None else profile.training_run_info), variant,
                            None if peer is None else peer.rsplit("/", 1)[1])
