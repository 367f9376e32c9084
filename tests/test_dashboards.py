"""Dashboards as code: each dashboard survives the SDK's models unchanged, and every panel queries a metric the
daemon or the sidecar really exports: checked against their live /metrics and a real Prometheus that scrapes
both while a classifier and a generator go through the pipeline."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.parser import text_string_to_metric_families

from collectors.text_features import generation_feature_names, generation_features
from dashboards import KINDS, build_dashboards, dashboard_uid, panel_queries, write_dashboards
from monitor.errors import ConfigError
from monitor.events import Event, FeedbackEvent, Generation, InferenceEvent, Latency, encode_batch
from monitor.profiles import Profile, save_profile
from tests.support import (
    DEADLINE_S,
    PROMETHEUS,
    Daemon,
    free_port,
    prometheus_query,
    running_prometheus,
    wait_until,
)

pytest.importorskip("grafana_foundation_sdk", reason="dashboards need grafana-foundation-sdk (inferwatch[grafana])")

METRIC = re.compile(r"\binferwatch_[a-z0-9_]+")
#: Each dashboard's template variables as the test sets them: one model of each kind, all of the fleet.
VALUES = {"classifier": ("tabular", "7"), "generator": ("chat", "1"), "fleet": (".*", ".*")}
RANGE_VARIABLES = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "5m"}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return build_dashboards()


# -- the JSON models -----------------------------------------------------------------------------------------

def test_every_dashboard_round_trips_through_the_sdk_models(dashboards: dict[str, dict[str, Any]]) -> None:
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    assert set(dashboards) == set(KINDS)
    for kind, model in dashboards.items():
        parsed = Dashboard.from_json(model)
        assert [p.id_val for p in parsed.panels or []] == [
            p["id"] for p in model["panels"]]
        again = json.loads(JSONEncoder(sort_keys=True).encode(parsed))
        assert again["panels"] == model["panels"], kind
        assert again == model, kind


def test_panels_targets_and_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    for kind, model in dashboards.items():
        assert model["uid"] == dashboard_uid(kind) and model["tags"] == ["inferwatch", kind]
        assert model["title"] and model["schemaVersion"] >= 39
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        assert {"model", "version"} <= set(variables)
        for panel in model["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["title"] and panel["description"] and panel["targets"], (kind, panel["id"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)) and all(refs)
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert METRIC.search(target["expr"]), target["expr"]
        per_model = [e for _, _, e in panel_queries(model) if "inferwatch_alerts_firing" not in e]
        if kind != "fleet":  # every per-model query follows the variables (the fleet's daemon health is global)
            assert all('model="$model"' in e and 'version=~"$version"' in e for e in per_model), kind
    assert len(panel_queries(dashboards["fleet"])) == sum(len(p.get("targets", []))
                                                         for p in dashboards["fleet"]["panels"])


def test_uids_are_what_grafana_takes() -> None:
    assert dashboard_uid("classifier") == "inferwatch-classifier"
    assert build_dashboards("staging")["fleet"]["uid"] == "staging-fleet"
    for prefix in ("x" * 40, "has space", "a/b"):
        with pytest.raises(ConfigError, match="40 characters"):
            dashboard_uid("fleet", prefix)
    with pytest.raises(ConfigError, match="unknown dashboard kind"):
        dashboard_uid("regressor")


def test_write_dashboards_gives_json_and_a_file_provisioning_config(tmp_path: Path) -> None:
    written = write_dashboards(tmp_path / "out", prefix="prod", folder="Models")
    assert sorted(p.name for p in written) == sorted([*(f"{k}.json" for k in KINDS), "provisioning.yaml"])
    for kind in KINDS:
        assert json.loads((tmp_path / "out" / f"{kind}.json").read_text()) == build_dashboards("prod")[kind]
    config = yaml.safe_load((tmp_path / "out" / "provisioning.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert (provider["type"], provider["folder"]) == ("file", "Models")
    assert Path(provider["options"]["path"]) == (tmp_path / "out").resolve()


# -- the live pipeline ---------------------------------------------------------------------------------------

def exported_names(families: Iterable[Metric]) -> set[str]:
    """Every series name a family can put on /metrics: its samples', and the suffixes of its type (a labelled
    family without children yet has no samples, but Prometheus will see those names once it has)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gaugehistogram": ("_bucket",)}
    names = set()
    for family in families:
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def referenced_names(dashboards: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Metric names the dashboards read (panel expressions and template variables), each with where."""
    found: dict[str, set[str]] = {}
    for kind, model in dashboards.items():
        for panel_id, ref, expr in panel_queries(model):
            for name in METRIC.findall(expr):
                found.setdefault(name, set()).add(f"{kind} panel {panel_id}/{ref}")
        for variable in model["templating"]["list"]:
            for name in METRIC.findall(str(variable.get("query", ""))):
                found.setdefault(name, set()).add(f"{kind} variable {variable['name']}")
    return found


def concrete(kind: str, expr: str) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would for the test's model."""
    model, version = VALUES[kind]
    for variable, value in RANGE_VARIABLES.items():
        expr = expr.replace(variable, value)
    expr = expr.replace("$model", model).replace("$version", version)
    if "$" in expr:
        raise AssertionError(f"a variable the test does not set in {expr}")
    return expr


class _OpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible completions server: a streamed answer of 3-12 tokens with their log-probabilities
    (a few milliseconds apart) and its usage."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        rng = np.random.default_rng(abs(hash(self.headers.get("x-request-id", ""))) % 2**32)
        tokens = [f" w{i}" for i in range(int(rng.integers(3, 13)))]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:  # the request said "Connection: close": say so, as HTTP/1.1 requires
            self.send_header("Connection", "close")
        self.end_headers()
        for i, token in enumerate(tokens):
            choice = {"index": 0, "text": token, "logprobs": {"token_logprobs": [float(-rng.exponential(1.0))]},
                      "finish_reason": "stop" if i == len(tokens) - 1 else None}
            self._chunk({"model": request.get("model", ""), "choices": [choice]})
            time.sleep(0.002)
        self._chunk({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(tokens)}})
        self._chunk(None)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: object) -> None:
        event = b"data: [DONE]\n\n" if data is None else b"data: " + json.dumps(data).encode() + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        return None


class _Hook(BaseHTTPRequestHandler):
    """An alert webhook that takes everything."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


W = np.array([[1.5, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.5], [0.5, 0.5, -0.5]])  # (F=4, K=3)
FEATURES = ("f0", "f1", "f2", "f3")
TEXT_FEATURES = generation_feature_names()


def _classified(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    """Features (n, 4), probabilities (n, 3), predictions and labels (n,) of a softmax classifier."""
    x = rng.normal(size=(n, 4))
    x[:, 1] += shift
    logits = x @ W  # (n, 3)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return x, p, p.argmax(axis=1), labels


def _profiles(folder: Path, rng: np.random.Generator) -> tuple[Profile, Profile]:
    from monitor.datafiles import LLMColumns, Table
    from monitor.offline import build_profile

    x, p, predictions, labels = _classified(rng, 3000)
    classifier = build_profile(Table(x=x, feature_names=FEATURES, predictions=predictions, probabilities=p,
                                     labels=labels), "tabular", "7", training_run="runs/42")
    n = 600
    llm = LLMColumns(output_tokens=rng.integers(3, 13, n).astype(np.float64), mean_logprob=-rng.exponential(1.0, n),
                     empty=rng.random(n) < 0.02, refusal=rng.random(n) < 0.02, accepted=rng.random(n) < 0.8)
    # the text features the sidecar computes (and _generations attaches) of prompts like the test's own
    texts = [generation_features(f"question {i}", "answer " * int(k), 7)[0]
             for i, k in enumerate(rng.integers(3, 13, n))]
    x = np.array([[t[name] for name in TEXT_FEATURES] for t in texts], dtype=np.float64)
    generator = build_profile(Table(x=x, feature_names=TEXT_FEATURES, embeddings=rng.normal(size=(n, 8)),
                                    llm=llm), "chat", "1", training_run="runs/7")
    save_profile(folder / "tabular.profile.npz", classifier)
    save_profile(folder / "chat.profile.npz", generator)
    return classifier, generator


def _classifier_traffic(rng: np.random.Generator, n: int, shift: float, start: float) -> tuple[list[Event], ...]:
    x, p, predictions, labels = _classified(rng, n, shift)
    ids = [uuid.uuid4().hex for _ in range(n)]
    events: list[Event] = [InferenceEvent(
        request_id=rid, time=start + i, model="tabular", version="7", task="classification",
        features=dict(zip(FEATURES, map(float, row), strict=True)), prediction=int(pred),
        probabilities=[float(v) for v in prob],
        latency=Latency(total_s=float(0.004 + rng.exponential(0.003)), gpu_s=float(0.002 + rng.exponential(0.001))))
        for i, (rid, row, prob, pred) in enumerate(zip(ids, x, p, predictions, strict=True))]
    feedback: list[Event] = [FeedbackEvent(request_id=rid, time=start + n, model="tabular", version="7",
                                           label=int(y)) for rid, y in zip(ids, labels, strict=True)]
    return events, feedback


def _generations(rng: np.random.Generator, n: int, start: float) -> tuple[list[Event], ...]:
    """Generations with prompt embeddings, as the in-process collector (collectors.generation) sends them."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    events: list[Event] = []
    for i, rid in enumerate(ids):
        tokens = int(rng.integers(3, 13))
        events.append(InferenceEvent(
            request_id=rid, time=start + i, model="chat", version="1", task="generation",
            features=generation_features(f"question {i}", "answer " * tokens, 7)[0],
            embedding=[float(v) for v in rng.normal(size=8)],
            generation=Generation(prompt_tokens=7, output_tokens=tokens, output_chars=3 * tokens,
                                  mean_logprob=float(-rng.exponential(1.0)), stop_reason="stop", refusal=False),
            latency=Latency(total_s=0.05 + 0.01 * tokens, time_to_first_token_s=0.05,
                            time_per_output_token_s=0.01)))
    feedback: list[Event] = [FeedbackEvent(request_id=rid, time=start + n, model="chat", version="1",
                                           accepted=bool(rng.random() < 0.8)) for rid in ids]
    return events, feedback


def _complete(port: int, request_id: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "x-request-id": request_id})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{request_id}: HTTP {exc.code} {exc.read()[:300]!r}") from None


def _total(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())


@dataclass
class Stack:
    prometheus_port: int
    daemon_metrics: str
    sidecar_metrics: str
    gpu: bool  # a GPU exporter (NVML) is scraped too
    gpu_reason: str


CLASSIFIER_WINDOW, GENERATOR_WINDOW, WINDOWS = 200, 40, 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The daemon (its pipeline and HTTP server, on the embedded bus) and the HTTP sidecar before an OpenAI-like
    server, scraped by a real Prometheus while a classifier (four windows, the last one drifted, with labels)
    and a generator (four windows through the sidecar and an in-process collector, with feedback) go through."""
    from collectors import EventProducer
    from collectors.gpu import GpuSampler
    from collectors.sidecar import ModelRef, Sidecar, SidecarConfig, run_sidecar
    from monitor.config import load_config_text
    from monitor.server import DaemonServer
    from monitor.wiring import build_pipeline

    if PROMETHEUS is None:
        pytest.skip("needs Prometheus: apt-get install prometheus (make test installs it)")
    folder = tmp_path_factory.mktemp("dashboards")
    rng = np.random.default_rng(2024)
    classifier, generator = _profiles(folder, rng)
    with ExitStack() as running:
        hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        running.callback(hook.server_close)
        running.callback(hook.shutdown)
        port = free_port()
        config = load_config_text(f"""
models:
  - {{name: tabular, version: "7", profile: "{folder / 'tabular.profile.npz'}", training_run: runs/42,
     window_size: {CLASSIFIER_WINDOW}}}
  - {{name: chat, version: "1", profile: "{folder / 'chat.profile.npz'}", training_run: runs/7,
     window_size: {GENERATOR_WINDOW}}}
window: {{size: {CLASSIFIER_WINDOW}, max_seconds: 3600, min_samples: 20}}
detect: {{quality: {{window: 100}}}}
alerts: {{breaches: 1, of: 1, webhook: {{url: "http://127.0.0.1:{hook.server_address[1]}/hook", max_attempts: 1}}}}
server: {{port: {port}}}
""")
        # what `inferwatch run` does (monitor.daemon.run_daemon), with the profiles handed in: load_profiles
        # refuses a profile without features, and the generator's (like the LLM demo's) has none
        wiring = build_pipeline(config, {"tabular/7": classifier, "chat/1": generator})
        running.callback(wiring.close)
        server = DaemonServer.from_config(config.server, wiring.registry, ready=lambda: not wiring.stop.is_set(),
                                          ingest=wiring.producer,
                                          topics={"events": config.topics.events, "feedback": config.topics.feedback})
        server.start()
        running.callback(server.close)
        wiring.start()
        daemon = Daemon(port)
        wait_until(lambda: daemon.request("GET", "/readyz")[0] == 200, "the daemon to be ready")

        upstream = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAI)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        running.callback(upstream.server_close)
        running.callback(upstream.shutdown)
        sidecar_registry = CollectorRegistry()
        producer = EventProducer(wiring.producer, config.topics.events, registry=sidecar_registry, linger_s=0.005)
        running.callback(lambda: producer.close(DEADLINE_S))
        started: list[Sidecar] = []
        sidecar_stop = threading.Event()
        sidecar_config = SidecarConfig(upstream=f"http://127.0.0.1:{upstream.server_address[1]}",
                                       listen_host="127.0.0.1", listen_port=0, admin_host="127.0.0.1", admin_port=0,
                                       models={"chat": ModelRef("chat", "1")})
        sidecar_thread = threading.Thread(target=run_sidecar, args=(sidecar_config, producer, sidecar_registry,
                                                                    sidecar_stop),
                                          kwargs={"on_started": started.append}, daemon=True)
        sidecar_thread.start()
        running.callback(sidecar_thread.join, DEADLINE_S)
        running.callback(sidecar_stop.set)
        wait_until(lambda: started, "the sidecar to start")
        proxy_port, admin_port = started[0].address[1], started[0].admin_address[1]

        targets = {"inferwatch": port, "sidecar": admin_port}
        gpu_registry = CollectorRegistry()
        sampler = GpuSampler(gpu_registry, interval_s=1.0)
        sampler.start()
        running.callback(sampler.close)
        if sampler.available:  # what a model process with the in-process collector exports beside its model
            from prometheus_client import start_http_server

            gpu_port = free_port()
            exporter, _ = start_http_server(gpu_port, "127.0.0.1", gpu_registry)
            running.callback(exporter.shutdown)
            targets["gpu"] = gpu_port
        prometheus_port = running.enter_context(running_prometheus(folder, targets))

        start = time.time() - 3600
        for w in range(WINDOWS):
            events, feedback = _classifier_traffic(rng, CLASSIFIER_WINDOW, 3.0 if w == WINDOWS - 1 else 0.0,
                                                   start + w * 1000)
            assert daemon.request("POST", "/v1/events", encode_batch(events),
                                  {"Content-Type": "application/json"})[0] == 202
            assert daemon.request("POST", "/v1/feedback", encode_batch(feedback),
                                  {"Content-Type": "application/json"})[0] == 202
            direct, accepted = _generations(rng, 3 * GENERATOR_WINDOW // 4, start + w * 1000)
            assert daemon.request("POST", "/v1/events", encode_batch(direct),
                                  {"Content-Type": "application/json"})[0] == 202
            for i in range(GENERATOR_WINDOW // 4):
                rid = f"w{w}-{i}"
                assert _complete(proxy_port, rid, {"model": "chat", "prompt": f"question {i}", "stream": True,
                                                   "stream_options": {"include_usage": True}}) == 200
                accepted.append(FeedbackEvent(request_id=rid, time=time.time(), model="chat", version="1",
                                              accepted=bool(rng.random() < 0.8)))
            assert daemon.request("POST", "/v1/feedback", encode_batch(accepted),
                                  {"Content-Type": "application/json"})[0] == 202
        # a request the sidecar proxies but cannot capture (no prompt): counted as skipped
        assert _complete(proxy_port, "no-prompt", {"model": "chat", "stream": True}) == 200
        assert producer.flush(DEADLINE_S)
        for model in ("tabular", "chat"):
            daemon.wait_metric("inferwatch_windows_closed_total", WINDOWS, model=model,
                               version="7" if model == "tabular" else "1", reason="full")
        wait_until(lambda: _total(daemon.request("GET", "/metrics")[1].decode(),
                                  "inferwatch_alert_notifications_total", outcome="delivered") >= 1,
                   "the drift alert to reach the webhook")
        closed = "sum(inferwatch_windows_closed_total)"
        wait_until(lambda: float(prometheus_query(prometheus_port, closed)[0]["value"][1]) >= 2 * WINDOWS,
                   "Prometheus to scrape the last windows", interval_s=0.5)
        yield Stack(prometheus_port=prometheus_port, daemon_metrics=daemon.request("GET", "/metrics")[1].decode(),
                    sidecar_metrics=Daemon(admin_port).request("GET", "/metrics")[1].decode(),
                    gpu=sampler.available, gpu_reason=sampler.reason or "")


@pytest.mark.slow
def test_every_metric_a_dashboard_reads_is_exported(dashboards: dict[str, dict[str, Any]], stack: Stack) -> None:
    from collectors.gpu import gpu_metrics

    live = exported_names([*text_string_to_metric_families(stack.daemon_metrics),
                           *text_string_to_metric_families(stack.sidecar_metrics)])
    # The GPU gauges come from the in-process collector's NVML sampler, which exports them only where NVML is;
    # they are checked against the families that sampler's metric function makes on a fresh registry.
    registry = CollectorRegistry()
    gpu_metrics(registry)
    gpu = exported_names(registry.collect())
    missing = {name: sorted(where) for name, where in referenced_names(dashboards).items()
               if name not in (gpu if name.startswith("inferwatch_gpu_") else live)}
    assert not missing, f"metrics the dashboards read that nothing exports: {json.dumps(missing, indent=1)}"


def _unanswered(dashboards: dict[str, dict[str, Any]], port: int, gpu: bool) -> list[str]:
    """The concrete queries (panels and template variables) that Prometheus answers with no series."""
    queries = []
    for kind, model in dashboards.items():
        for panel_id, ref, expr in panel_queries(model):
            if ("inferwatch_gpu_" in expr) == gpu:
                queries.append((f"{kind} panel {panel_id}/{ref}", concrete(kind, expr)))
        if not gpu:
            for variable in model["templating"]["list"]:
                found = re.fullmatch(r"label_values\((.+), (\w+)\)", str(variable.get("query", "")))
                if found:  # the selector whose label values fill the variable's list
                    queries.append((f"{kind} variable {variable['name']}", concrete(kind, found.group(1))))
    return [f"{where}: {expr}" for where, expr in queries if not prometheus_query(port, expr)]


@pytest.mark.slow
def test_prometheus_answers_every_panel_with_a_series(dashboards: dict[str, dict[str, Any]], stack: Stack) -> None:
    unanswered: list[str] = []

    def answered() -> bool:
        unanswered[:] = _unanswered(dashboards, stack.prometheus_port, gpu=False)
        return not unanswered

    with suppress(AssertionError):  # a gauge set by the last window may reach Prometheus a scrape later
        wait_until(answered, "Prometheus to answer every panel", timeout_s=10, interval_s=1)
    assert not unanswered, "queries with no series:\n" + "\n".join(unanswered)


@pytest.mark.slow
def test_prometheus_answers_the_gpu_panels(dashboards: dict[str, dict[str, Any]], stack: Stack) -> None:
    if not stack.gpu:
        pytest.skip(f"no GPU telemetry here (NVML: {stack.gpu_reason or 'unavailable'})")
    unanswered = _unanswered(dashboards, stack.prometheus_port, gpu=True)
    assert not unanswered, "GPU queries with no series:\n" + "\n".join(unanswered)
