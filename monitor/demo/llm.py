"""The LLM half of ``inferwatch demo``: a character-level GPT behind the HTTP sidecar, watched by the pipeline.

A small GPT trained on Shakespeare's plays (cached after the first run) is served by an OpenAI-compatible
server; clients call it through :mod:`collectors.sidecar`, half of them streaming, and send accept/reject
feedback keyed by the ``x-request-id`` the sidecar returns. The reference profile comes from the model's
answers to held-out lines of the plays, and what those prompts and answers look like as text (lengths,
character mix, the prompts' hashed n-gram embedding: :func:`collectors.text_features.generation_features`, as the
sidecar computes them). From the middle window on, prompts come from another domain (support-desk questions) and
users accept fewer answers: the embedding and feature drift detectors should find the shift from the prompts'
text alone, and the LLM quality detector from the acceptance. With a run store
(:mod:`monitor.demo.runs`) the training is recorded as a run holding the reference answers (``reference.npz``),
the profile is built from it and names it, and each alerting window is logged to it.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from collectors import EventProducer, Events
from collectors.refusal import is_refusal
from collectors.sidecar import ModelRef, Sidecar, SidecarConfig, run_sidecar
from collectors.text_features import generation_feature_names, generation_features
from monitor.alerts import MemoryChannel
from monitor.config import AlertsConfig, WindowConfig
from monitor.datafiles import LLMColumns, Table
from monitor.demo.charlm import GPTConfig, generate, load_or_train
from monitor.demo.common import close_timeout, demo_config, demo_pipeline, wait_for_results
from monitor.demo.llm_server import serve
from monitor.demo.output import DemoOutput
from monitor.demo.runs import DemoRun, RunStore, TrainedRun, describe
from monitor.demo.shakespeare import corpus
from monitor.errors import InferwatchError
from monitor.evaluation import WindowResult
from monitor.events import FeedbackEvent
from monitor.offline import build_profile

MODEL, VERSION = "charlm", "1"
MAX_TOKENS = 60
REFERENCE_ANSWERS = 120
TEXT_FEATURES = generation_feature_names()
OTHER_DOMAIN = (
    "How do I reset my password on the new portal?",
    "My invoice shows the wrong VAT number, can you fix it?",
    "The app crashes when I upload a PNG larger than 5 MB.",
    "Please cancel my subscription and refund last month.",
    "Which Python version does the SDK support?",
    "Can I export my dashboard to CSV every Monday?",
    "Error 502 when calling the API from Frankfurt.",
    "How many seats are included in the team plan?",
)


@dataclass(frozen=True)
class LLMWindow:
    window: int
    drift_injected: bool
    acceptance: float
    mean_logprob: float
    output_tokens_p50: float
    ttft_p50_s: float
    detectors: tuple[str, ...]
    findings: tuple[str, ...]
    prompt_mmd_p: float  # the embedding drift test's p-value on the prompts (NaN: not run)
    text_drifted: tuple[str, ...]  # text features whose drift test fired


@dataclass(frozen=True)
class LLMDemoReport:
    windows: int
    window_size: int
    drift_injected_at_window: int
    train_seconds: float
    val_loss: float
    elapsed_seconds: float
    captured: int
    capture_skipped: int
    alerts: tuple[dict[str, object], ...]
    per_window: tuple[LLMWindow, ...]
    run: DemoRun | None  # the recorded training run; None with --no-runs


def _prompts(text: str, rng: np.random.Generator, n: int) -> list[str]:
    """Lines of dialogue from the last tenth of the plays (held out from training), as prompts."""
    lines = [line.strip() for line in text[int(len(text) * 0.9):].splitlines() if 30 <= len(line.strip()) <= 90]
    return [lines[i] + "\n" for i in rng.integers(0, len(lines), n)]


def _call(port: int, prompt: str, stream: bool, seed: int) -> tuple[str, str]:
    """One completion through the sidecar: (request id the sidecar returned, completion text)."""
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.8,
                       "stop": "\n\n", "logprobs": 1, "stream": stream, "seed": seed,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    request_id = response.getheader("x-request-id") or ""
    conn.close()
    if response.status != 200:
        raise InferwatchError(f"completion failed with HTTP {response.status}: {raw[:200]!r}")
    if not stream:
        return request_id, str(json.loads(raw)["choices"][0]["text"])
    text = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: ") and block != b"data: [DONE]":
            chunk = json.loads(block[6:])
            text += [c.get("text", "") for c in chunk.get("choices", [])]
    return request_id, "".join(text)


def run_llm_demo(kafka: str | None = None, windows: int = 8, window_size: int = 40, seed: int = 7,
                 cache_dir: Path | None = None, progress: Callable[[str], None] = lambda _: None,
                 alerts: AlertsConfig | None = None, out: DemoOutput | None = None,
                 runs: RunStore | None = None) -> LLMDemoReport:
    """Train (or load), serve through the sidecar, shift the prompts and watch; with ``runs`` the training is
    recorded there and the profile, the alerts and the alerting windows' samples go with that run."""
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    text = corpus()
    progress("training (or loading) a character-level GPT on Shakespeare's plays ...")
    model, tokenizer, stats = load_or_train(text, GPTConfig(), cache_dir or Path.home() / ".cache" / "inferwatch",
                                            seed=seed)
    progress(f"model ready: held-out loss {stats.val_loss:.2f} nats/char (trained in {stats.seconds:.0f} s)")

    # reference: the model's answers to held-out lines, and how often users accepted them (simulated)
    # and what the prompts and answers look like as text, computed as the sidecar computes it for live traffic
    tokens, logprobs, empty, refusal, texts, embeddings = [], [], [], [], [], []
    for i, prompt in enumerate(_prompts(text, rng, REFERENCE_ANSWERS)):
        gen = generate(model, tokenizer, prompt, MAX_TOKENS, temperature=0.8, seed=seed + i, stop="\n\n")
        steps = list(gen)
        answer = "".join(s.text for s in steps)
        tokens.append(len(steps))
        logprobs.append(float(np.mean([s.logprob for s in steps])) if steps else np.nan)
        empty.append(not answer.strip())
        refusal.append(is_refusal(answer))
        features, embedding = generation_features(prompt, answer, gen.prompt_tokens)
        texts.append([features[name] for name in TEXT_FEATURES])
        embeddings.append(embedding)
    answers = {"output_tokens": np.array(tokens, dtype=np.float64), "mean_logprob": np.array(logprobs),
               "empty": np.array(empty), "refusal": np.array(refusal), "accepted": rng.random(len(tokens)) < 0.85,
               "X": np.array(texts), "feature_names": np.array(TEXT_FEATURES), "embeddings": np.array(embeddings)}
    run = None
    if runs is None:
        table = Table(x=answers["X"], feature_names=TEXT_FEATURES, embeddings=answers["embeddings"],
                      llm=LLMColumns(answers["output_tokens"], answers["mean_logprob"], answers["empty"],
                                     answers["refusal"], answers["accepted"]))
        profile = build_profile(table, MODEL, VERSION, training_run=f"demo://charlm/seed-{seed}")
    else:
        progress("recording the training run ...")
        run = runs.record(TrainedRun(
            name=f"{MODEL}-seed-{seed}",
            params={**asdict(model.config), "steps": stats.steps, "batch_size": stats.batch_size, "lr": stats.lr,
                    "seed": stats.seed, "corpus": "Shakespeare's plays (last tenth held out)",
                    "reference_answers": len(tokens), "max_tokens": MAX_TOKENS},
            metrics={"train_loss": stats.train_loss, "train_seconds": stats.seconds,
                     "tokens_per_second": stats.tokens_per_second,
                     **({} if stats.val_loss is None else {"val_loss": stats.val_loss})},
            history={"loss": stats.losses}, data={"reference.npz": answers}))
        progress(describe(run))
        with tempfile.TemporaryDirectory(prefix="inferwatch-llmdemo-") as tmp:
            profile = runs.baseline(run, "reference.npz", Path(tmp) / f"{MODEL}.profile.npz", MODEL, VERSION)
    progress(f"reference: {len(tokens)} answers, median {np.median(tokens):.0f} tokens, "
             f"mean log-prob {np.nanmean(logprobs):.2f}")

    # a window also closes 20 s after it opened, so a capture the sidecar skipped (it counts them) cannot leave
    # the last window waiting for an event that never comes
    config = demo_config("llmdemo", MODEL, VERSION, "(in memory)", profile.training_run, kafka,
                         WindowConfig(size=window_size, max_seconds=20, min_samples=20), alerts,
                         log_window_samples=run is not None)
    topics = config.topics
    channel = MemoryChannel()
    results: list[WindowResult] = []
    sidecar_registry = CollectorRegistry()
    inject_at = windows // 2
    accepted_by_window: list[float] = []
    with ExitStack() as running:  # on the way out: sidecar, producers, model server, then the pipeline
        wiring = demo_pipeline(config, {f"{MODEL}/{VERSION}": profile}, channel, results, out)
        running.callback(wiring.close, close_timeout(out))
        wiring.start()
        server = serve(model, tokenizer, model_name=MODEL)
        server.start()
        running.callback(server.stop)
        events = EventProducer(wiring.producer, topics.events, registry=CollectorRegistry())
        running.callback(events.close)
        feedback = EventProducer(wiring.producer, topics.feedback, registry=CollectorRegistry())
        running.callback(feedback.close)
        port = _start_sidecar(running, server.url, events, sidecar_registry)

        progress(f"serving {windows} windows of {window_size} completions through the sidecar; "
                 f"prompts from another domain from window {inject_at}")
        for w in range(windows):
            drifted = w >= inject_at
            prompts = ([OTHER_DOMAIN[i] + "\n" for i in rng.integers(0, len(OTHER_DOMAIN), window_size)]
                       if drifted else _prompts(text, rng, window_size))
            accepted = 0
            for i, prompt in enumerate(prompts):
                request_id, _ = _call(port, prompt, stream=i % 2 == 0, seed=int(rng.integers(1 << 30)))
                ok = bool(rng.random() < (0.5 if drifted else 0.85))  # users like off-topic answers less
                accepted += ok
                feedback.submit(Events([FeedbackEvent(request_id=request_id, time=time.time(), model=MODEL,
                                                      version=VERSION, accepted=ok)]))
            accepted_by_window.append(accepted / window_size)
        events.flush(30)
        feedback.flush(30)
        wait_for_results(wiring, results, windows, what="LLM windows")

    per_window = []
    for r in sorted(results, key=lambda r: r.index)[:windows]:
        found = r.findings
        llm = r.llm
        length = llm.test("output_tokens") if llm else None
        logprob = llm.test("mean_logprob") if llm else None
        per_window.append(LLMWindow(
            window=r.index, drift_injected=r.index >= inject_at, acceptance=accepted_by_window[r.index],
            mean_logprob=float("nan") if logprob is None else round(logprob.value, 3),
            output_tokens_p50=float("nan") if length is None else round(length.value, 1),
            ttft_p50_s=float("nan") if llm is None else round(llm.ttft_s.p50, 4),
            detectors=tuple(f.detector for f in found if f.drifted),
            findings=tuple(llm.findings) if llm else (),
            prompt_mmd_p=float("nan") if r.embedding is None else float(r.embedding.p_value),
            text_drifted=r.drifted_features))
    if out is not None:
        for alert in channel.alerts:
            out.alert(alert)
    return LLMDemoReport(windows=windows, window_size=window_size, drift_injected_at_window=inject_at,
                         train_seconds=round(stats.seconds, 1),
                         val_loss=float("nan") if stats.val_loss is None else round(stats.val_loss, 3),
                         elapsed_seconds=round(time.monotonic() - started, 1),
                         captured=int(_total(sidecar_registry, "inferwatch_sidecar_captured_events_total")),
                         capture_skipped=int(_total(sidecar_registry, "inferwatch_sidecar_capture_skipped_total")),
                         alerts=tuple({"window": a.window, "model": a.model, "version": a.version,
                                       "detector": a.detector, "status": a.status, "summary": a.summary,
                                       "links": dict(a.links)} for a in channel.alerts),
                         per_window=tuple(per_window), run=run)


def _start_sidecar(running: ExitStack, upstream: str, events: EventProducer, registry: CollectorRegistry) -> int:
    """Run the HTTP sidecar in front of ``upstream`` in a thread (stopped when ``running`` closes); its port."""
    started: list[Sidecar] = []
    ready, stop = threading.Event(), threading.Event()

    def on_started(s: Sidecar) -> None:
        started.append(s)
        ready.set()

    config = SidecarConfig(upstream=upstream, listen_host="127.0.0.1", listen_port=0, admin_host="127.0.0.1",
                           admin_port=0, models={MODEL: ModelRef(MODEL, VERSION)})
    thread = threading.Thread(target=run_sidecar, args=(config, events, registry, stop),
                              kwargs={"on_started": on_started}, name="inferwatch-sidecar", daemon=True)
    thread.start()
    running.callback(thread.join, 15)
    running.callback(stop.set)
    if not ready.wait(15):
        raise InferwatchError("the sidecar did not start within 15 s")
    return started[0].address[1]


def _total(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for metric in registry.collect() for s in metric.samples if s.name == name)


def format_llm_report(r: LLMDemoReport) -> str:
    lines = [f"LLM: {r.windows * r.window_size} completions of a character-level GPT through the sidecar, "
             f"prompts from another domain from window {r.drift_injected_at_window}", "",
             " window  traffic   accepted  mean logprob  tokens  TTFT p50  prompts MMD p  found"]
    for w in r.per_window:
        found = [*w.findings, *(["prompts moved (embedding)"] if "embedding_drift" in w.detectors else []),
                 *(["text: " + ", ".join(w.text_drifted)] if w.text_drifted else [])]
        lines.append(f" {w.window:>6}  {'DRIFTED' if w.drift_injected else 'clean':<8}  {w.acceptance:>8.2f}  "
                     f"{w.mean_logprob:>12.3f}  {w.output_tokens_p50:>6.1f}  {w.ttft_p50_s * 1000:>6.1f} ms  "
                     f"{w.prompt_mmd_p:>13.4f}  {'; '.join(found) or '-'}")
    lines.append("")
    for a in r.alerts:
        lines.append(f"ALERT {a['status']:<8} {a['detector']:<16} {a['model']}/{a['version']} window {a['window']}: "
                     f"{a['summary']}")
    if not r.alerts:
        lines.append("no LLM alerts")
    lines.append(f"\nthe sidecar captured {r.captured} completions ({r.capture_skipped} skipped); "
                 f"model loss {r.val_loss:.2f} nats/char; total {r.elapsed_seconds:.0f} s")
    if r.run is not None:
        lines.append(f"training run {r.run.uri}, with each alerting window under inferwatch/windows/ in {r.run.url}")
    return "\n".join(lines)
