"""Two versions of one model watched side by side (A/B, canary): config, the comparison of each canary window with
the control's last window through a real pipeline on the embedded bus, its statistics against scipy, mismatched
variant attributes, and peer windows too old to compare with."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy import stats

from detectors import compare_windows, latency_shift
from monitor.alerts import MemoryChannel
from monitor.config import (
    Config,
    DetectConfig,
    ModelConfig,
    VariantsConfig,
    WindowConfig,
    load_config_text,
    variant_peers,
)
from monitor.errors import ConfigError
from monitor.events import InferenceEvent, Latency, encode_batch
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline, WindowResult
from monitor.profiles import load_profile
from monitor.status import StatusBoard, WatchedModelInfo
from monitor.transport import MemoryBus
from monitor.variants import peer_window
from monitor.windows import ClosedWindow
from tests.support import FEATURES, MODEL, PRIORS, write_profile
from tests.test_detectors_drift import assert_ks_p_value
from tests.test_prometheus_metrics import check_names, needs_promtool, promtool_problems

CONTROL, CANARY = "7", "8"
T0 = 1_700_000_000.0
WINDOW = 400

# -- config ------------------------------------------------------------------------------------------------------


def _models(*entries: str) -> str:
    return "models:\n" + "".join(f"  - {{name: m, profile: p, {e}}}\n" for e in entries)


def test_variants_and_peers_are_read_from_the_config() -> None:
    config = load_config_text(_models("version: 1, variant: stable", "version: 2, variant: canary",
                                      "version: 3, variant: B, compare_with: 2", "version: 4")
                              + "detect: {variants: {max_age_s: 120, max_rows: 1000}}")
    assert [(m.version, m.variant, m.compare_with) for m in config.models] == [
        ("1", "stable", None), ("2", "canary", None), ("3", "B", "2"), ("4", None, None)]
    # compare_with is a version: YAML's number is read as a name, like `version`
    assert load_config_text(_models("version: 1", "version: 2, compare_with: 1")).models[1].compare_with == "1"
    # the canary goes against the control-like variant, B against the version it names, 4 (no variant) is alone
    assert variant_peers(config.models) == {"m/2": "m/1", "m/3": "m/2"}
    assert config.detect.variants == VariantsConfig(max_age_s=120, max_rows=1000)


def test_without_a_control_variant_the_first_listed_version_is_the_peer() -> None:
    config = load_config_text(_models("version: 5, variant: blue", "version: 6, variant: green",
                                      "version: 7, variant: A"))
    assert variant_peers(config.models) == {"m/5": "m/7", "m/6": "m/7"}  # "A" names the control
    config = load_config_text(_models("version: 5, variant: blue", "version: 6, variant: green"))
    assert variant_peers(config.models) == {"m/6": "m/5"}
    # one version with a variant is no group; other models' versions never join it
    config = load_config_text(_models("version: 5, variant: canary")
                              + "  - {name: other, version: 1, profile: p, variant: control}\n")
    assert variant_peers(config.models) == {}


@pytest.mark.parametrize(("entries", "message"), [
    (("version: 1", "version: 2, compare_with: 9"), r"m has no configured version '9'.* at models\[1\]\.compare_with"),
    (("version: 1, compare_with: 1", "version: 2"), r"m/1 cannot be compared with itself at models\[0\]\.compare_with"),
    (("version: 1, variant: canary", "version: 2, variant: canary"),
     r"m/2 and m/1 are both variant 'canary'.* at models\[1\]\.variant"),
    (("version: 1, variant: ''",), r"models\[0\]\.variant"),
])
def test_bad_variant_config_names_the_key(entries: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(_models(*entries))


def test_compare_with_names_a_version_of_the_same_model() -> None:
    text = _models("version: 1", "version: 2") + "  - {name: other, version: 3, profile: p, compare_with: 1}\n"
    with pytest.raises(ConfigError, match=r"other has no configured version '1'.*models\[2\]\.compare_with"):
        load_config_text(text)


# -- a control and a canary through a real pipeline -----------------------------------------------------------------


def _events(version: str, n: int, rng: np.random.Generator, offset: int, shift: float = 0.0,
            slower: float = 1.0, variant: str | None = None) -> list[InferenceEvent]:
    """``n`` events of ``version`` like the reference (four N(0, 1) features, classes 0.5/0.3/0.2, log-normal
    latency around 20 ms); ``shift`` sds added to f1, latency times ``slower``. Event ``i`` is at ``T0 + 2 (offset
    + i)`` (+1 for the canary), so the two versions' events interleave."""
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 1] += shift
    predictions = rng.choice(3, size=n, p=PRIORS)
    latency = rng.lognormal(np.log(0.02), 0.3, size=n) * slower
    attributes = {} if variant is None else {"variant": variant}
    half = 1.0 if version == CANARY else 0.0
    return [InferenceEvent(request_id=uuid.uuid4().hex, time=T0 + 2 * (offset + i) + half, model=MODEL,
                           version=version, task="classification",
                           features=dict(zip(FEATURES, map(float, row), strict=True)), prediction=int(p),
                           latency=Latency(total_s=float(s)), attributes=attributes)
            for i, (row, p, s) in enumerate(zip(x, predictions, latency, strict=True))]


class SideBySide:
    """A pipeline on the embedded bus watching ``MODEL`` versions 7 (control) and 8 (canary)."""

    def __init__(self, folder: Path, detect: DetectConfig = DetectConfig(),  # noqa: B008 - frozen
                 canary: str | None = "canary") -> None:
        profile_path = str(write_profile(folder))
        models = [ModelConfig(name=MODEL, version=CONTROL, profile=profile_path, variant="control"),
                  ModelConfig(name=MODEL, version=CANARY, profile=profile_path, variant=canary,
                              compare_with=None if canary is not None else CONTROL)]
        self.config = Config(models=models, window=WindowConfig(size=WINDOW, max_seconds=3600, min_samples=30),
                             detect=detect)
        profile = load_profile(profile_path)
        self.bus = MemoryBus()
        self.registry = CollectorRegistry()
        self.channel = MemoryChannel()
        self.results: list[WindowResult] = []
        self.pipeline = Pipeline(self.config, {m.key: profile for m in models},
                                 self.bus.consumer([self.config.topics.events], "detect"), self.bus.producer(),
                                 daemon_metrics(self.registry), [self.channel], on_result=self.results.append)
        self._producer = self.bus.producer()
        self._sent = 0

    def send(self, control: list[InferenceEvent], canary: list[InferenceEvent]) -> None:
        """Both versions' events in time order, 100 to a batch record (as collectors send them), then processed."""
        merged = sorted(control + canary, key=lambda e: e.time)
        for i in range(0, len(merged), 100):
            self._producer.send(self.config.topics.events, encode_batch(merged[i:i + 100]))
            self._sent += 1
        while self.pipeline.messages < self._sent:
            self.pipeline.step(0.05)

    def of(self, version: str) -> list[WindowResult]:
        return [r for r in self.results if r.version == version]

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"model": MODEL, **labels})


def test_the_same_traffic_on_both_versions_is_never_told_apart(tmp_path: Path) -> None:
    # 30 canary windows, each compared with the control's window of the same time span. The comparison is one test
    # per window at family-wise level alpha = 0.001 (Bonferroni over its three parts, then over the 4 features), so
    # the expected number of false findings in 30 windows is at most 0.03.
    side = SideBySide(tmp_path, DetectConfig(alpha=0.001))
    rng = np.random.default_rng(11)
    n = 30 * WINDOW
    side.send(_events(CONTROL, n, rng, 0), _events(CANARY, n, rng, 0))

    canary = side.of(CANARY)
    assert len(canary) == 30 and len(side.of(CONTROL)) == 30
    assert all(r.variant is None for r in side.of(CONTROL))  # the control is compared with nothing
    compared = [r.variant for r in canary]
    assert all(v is not None and v.comparison is not None for v in compared)
    assert [v.peer_window_id for v in compared if v is not None] == [r.window_id for r in side.of(CONTROL)]
    assert [v.drifted for v in compared if v is not None] == [False] * 30
    assert not [a for a in side.channel.alerts if a.detector == "variant_comparison"]
    assert side.value("inferwatch_drift_detected", version=CANARY, detector="variant_comparison") == 0
    assert side.value("inferwatch_model_info", version=CANARY, training_run="runs/42", kind="classifier",
                      variant="canary") == 1


@pytest.mark.parametrize("change", ["features", "latency"])
def test_a_canary_that_changes_is_found_within_one_window_naming_its_peer(tmp_path: Path, change: str) -> None:
    side = SideBySide(tmp_path)
    rng = np.random.default_rng(12)
    before, after = 10 * WINDOW, 3 * WINDOW
    shift, slower = (0.8, 1.0) if change == "features" else (0.0, 1.5)
    side.send(_events(CONTROL, before, rng, 0), _events(CANARY, before, rng, 0))
    # the change point: the canary's window 10 is the first that holds only changed traffic
    side.send(_events(CONTROL, after, rng, before),
              _events(CANARY, after, rng, before, shift=shift, slower=slower))

    found = [r.findings[[f.detector for f in r.findings].index("variant_comparison")] for r in side.of(CANARY)]
    assert [f.drifted for f in found] == [False] * 10 + [True] * 3  # no alarm before, one within a window after
    for f in found[10:]:
        assert f.summary.startswith(f"differs from version {CONTROL} ({MODEL}/{CONTROL}@")
        if change == "features":
            assert f.features == ("f1",) and "f1 (KS=" in f.summary and "latency" not in f.summary
        else:
            assert f.features == () and "latency (p50" in f.summary and "Mann-Whitney p=" in f.summary
            (evidence,) = f.evidence
            assert evidence.statistic == "latency_p50_change" and evidence.value == pytest.approx(0.5, abs=0.15)
    # the alert rule of every detector applies: 2 breaching windows of the last 3 fire it
    firing = [a for a in side.channel.alerts if a.detector == "variant_comparison" and a.status == "firing"]
    assert [(a.version, a.window) for a in firing] == [(CANARY, 11)]
    assert f"version {CONTROL}" in firing[0].summary
    peer = {"version": CANARY, "peer": CONTROL}
    assert side.value("inferwatch_drift_detected", version=CANARY, detector="variant_comparison") == 1
    # the results topic carries the comparison like any detector's result
    published = [json.loads(m.value) for m in side.bus.consumer([side.config.topics.results], "reader").poll(0.5)]
    last = [r for r in published if r["version"] == CANARY][-1]["results"]["variant_comparison"]
    assert (last["peer"], last["peer_window_id"]) == (CONTROL, side.of(CONTROL)[-1].window_id)
    if change == "features":
        assert side.value("inferwatch_variant_drifted_features", **peer) == 1
        assert side.value("inferwatch_variant_p_value", **peer, test="features") < 1e-6  # type: ignore[operator]
        assert side.value("inferwatch_variant_ks_statistic", **peer, feature="f1") > 0.2  # type: ignore[operator]
    else:
        assert side.value("inferwatch_variant_drifted_features", **peer) == 0
        p_value = side.value("inferwatch_variant_p_value", **peer, test="latency")  # a p-value, not a time
        assert p_value < 1e-6  # type: ignore[operator]
        assert side.value("inferwatch_variant_latency_change_ratio", **peer) == pytest.approx(0.5, abs=0.15)


def test_the_statistics_equal_scipy_on_the_same_two_windows(tmp_path: Path) -> None:
    side = SideBySide(tmp_path)
    rng = np.random.default_rng(13)
    control = _events(CONTROL, 2 * WINDOW, rng, 0)
    canary = _events(CANARY, 2 * WINDOW, rng, 0, shift=0.3, slower=1.2)
    side.send(control, canary)

    result = side.of(CANARY)[1].variant
    assert result is not None and result.comparison is not None
    assert result.peer_window_id == side.of(CONTROL)[1].window_id
    c = result.comparison
    assert c.features is not None and c.classes is not None and c.latency is not None
    a, b = control[WINDOW:], canary[WINDOW:]  # window 1 of each version
    for j, f in enumerate(c.features.features):
        ks = stats.ks_2samp([e.features[FEATURES[j]] for e in a], [e.features[FEATURES[j]] for e in b])
        assert f.name == FEATURES[j]
        assert f.ks_statistic == pytest.approx(float(ks.statistic), abs=1e-12)
        assert_ks_p_value(f.p_value, f.p_settled, float(ks.pvalue), f.n_reference, f.n_current)
        assert f.p_adjusted == pytest.approx(min(1.0, 4 * f.p_value), rel=1e-12)  # Bonferroni
    table = [np.bincount([int(e.prediction) for e in w], minlength=3) for w in (a, b)]  # type: ignore[arg-type]
    chi2 = stats.chi2_contingency(table, correction=False)
    assert (c.classes.statistic, c.classes.dof) == (pytest.approx(float(chi2.statistic), rel=1e-9), int(chi2.dof))
    assert c.classes.p_value == pytest.approx(float(chi2.pvalue), rel=1e-9)
    u = stats.mannwhitneyu([e.latency.total_s for e in b if e.latency], [e.latency.total_s for e in a if e.latency])
    assert (c.latency.statistic, c.latency.p_value) == (float(u.statistic), pytest.approx(float(u.pvalue)))
    assert c.level == pytest.approx(0.01 / 3)  # three parts share alpha


def test_mann_whitney_u_is_the_count_of_slower_pairs() -> None:
    # An independent reference for U: the number of (window, peer) pairs where the window's request is slower,
    # ties counting half; the p-value is scipy's.
    rng = np.random.default_rng(3)
    peer = np.round(rng.lognormal(np.log(0.02), 0.3, 150), 4)  # rounded: some ties
    window = np.round(rng.lognormal(np.log(0.024), 0.3, 120), 4)
    res = latency_shift(window, peer, alpha=0.01, min_change=0.1)
    pairs = window[:, None] - peer[None, :]  # (120, 150)
    assert res.statistic == float((pairs > 0).sum() + 0.5 * (pairs == 0).sum())
    assert res.p_value == pytest.approx(float(stats.mannwhitneyu(window, peer).pvalue), rel=1e-12)
    assert (res.p50, res.peer_p50) == (float(np.median(window)), float(np.median(peer)))
    # too few rows for any outcome to be significant: nothing is claimed
    tiny = latency_shift(window[:3], peer[:3], alpha=0.01)
    assert tiny.insufficient and not tiny.drifted


@pytest.mark.slow
def test_the_false_alarm_rate_of_one_comparison_is_at_most_alpha() -> None:
    # 1000 seeded pairs of windows from one distribution (4 features, 3 classes, latency): the comparison is one test
    # at family-wise level alpha = 0.05, so at most 5% of pairs may differ (plus 3 binomial standard errors).
    rng = np.random.default_rng(19)
    pairs, m, alpha = 1000, 200, 0.05
    found = 0
    for _ in range(pairs):
        x, y = rng.normal(size=(2, m, 4))
        classes = rng.choice(3, size=(2, m), p=PRIORS)
        lat = rng.lognormal(np.log(0.02), 0.3, size=(2, m))
        res = compare_windows(FEATURES, x, y, classes[0], np.bincount(classes[1], minlength=3), lat[0], lat[1],
                              alpha=alpha, min_effect=0.0, min_effect_classes=0.0, min_latency_change=0.0)
        found += res.drifted
    assert found / pairs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / pairs)


def test_features_absent_from_the_peer_window_are_left_out() -> None:
    rng = np.random.default_rng(4)
    peer, window = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + np.array([0.0, 1.0])
    peer[:, 1] = np.nan  # the peer never sent f1
    res = compare_windows(["f0", "f1"], window, peer)
    assert res.features is not None and [f.name for f in res.features.features] == ["f0"]
    assert not res.drifted and res.level == 0.01  # features are the only part: all of alpha


def test_mismatched_variant_attributes_are_counted_and_still_processed(tmp_path: Path) -> None:
    side = SideBySide(tmp_path)
    rng = np.random.default_rng(14)
    canary = (_events(CANARY, 300, rng, 0, variant="canary") + _events(CANARY, 5, rng, 300, variant="control")
              + _events(CANARY, 3, rng, 305, variant="blue") + _events(CANARY, 92, rng, 308))
    side.send(_events(CONTROL, WINDOW, rng, 0, variant="control"), canary)

    def mismatched(version: str, reason: str) -> float | None:
        return side.value("inferwatch_variant_mismatched_events_total", version=version, reason=reason)

    assert (mismatched(CANARY, "other_variant"), mismatched(CANARY, "unknown_variant")) == (5, 3)
    assert (mismatched(CONTROL, "other_variant"), mismatched(CONTROL, "unknown_variant")) == (0, 0)
    # the version decides: all 400 canary events were consumed into the canary's window
    assert side.value("inferwatch_events_consumed_total", version=CANARY) == 400
    assert [r.n_events for r in side.of(CANARY)] == [WINDOW]


def test_a_version_without_a_variant_ignores_the_attribute(tmp_path: Path) -> None:
    side = SideBySide(tmp_path, canary=None)  # compared through compare_with, no variant configured
    rng = np.random.default_rng(15)
    side.send(_events(CONTROL, WINDOW, rng, 0), _events(CANARY, WINDOW, rng, 0, variant="anything"))
    assert side.value("inferwatch_variant_mismatched_events_total", version=CANARY, reason="unknown_variant") is None
    assert side.of(CANARY)[0].variant is not None  # still compared with its peer


def test_no_comparison_without_a_recent_peer_window_and_the_result_says_why(tmp_path: Path) -> None:
    side = SideBySide(tmp_path, DetectConfig(variants=VariantsConfig(max_age_s=60)))
    rng = np.random.default_rng(16)
    side.send([], _events(CANARY, WINDOW, rng, 0))  # the canary's first window: the control has sent nothing
    side.send(_events(CONTROL, WINDOW, rng, WINDOW), [])  # the control's window ends at T0 + 1598
    side.send([], _events(CANARY, WINDOW, rng, 5000))  # begins at T0 + 10001: 8403 s after it, beyond 60 s

    first, stale = (r.variant for r in side.of(CANARY))
    assert first is not None and first.comparison is None and first.insufficient
    assert first.reason == f"no window of version {CONTROL} has closed yet"
    assert stale is not None and stale.comparison is None and stale.insufficient
    assert stale.peer_window_id == side.of(CONTROL)[0].window_id and stale.gap_s == pytest.approx(8403)
    assert stale.reason.startswith(f"no recent window of version {CONTROL}: its last ({MODEL}/{CONTROL}@")
    assert "max_age_s = 60" in stale.reason
    finding = next(f for f in side.of(CANARY)[1].findings if f.detector == "variant_comparison")
    assert finding.insufficient and not finding.drifted and "no recent window" in finding.summary
    # an insufficient comparison sets no verdict and no gauge
    assert side.value("inferwatch_drift_detected", version=CANARY, detector="variant_comparison") is None
    assert side.value("inferwatch_variant_drifted_features", version=CANARY, peer=CONTROL) is None


@needs_promtool
def test_promtool_accepts_the_variant_metrics(tmp_path: Path) -> None:
    side = SideBySide(tmp_path)
    rng = np.random.default_rng(18)
    side.send(_events(CONTROL, 2 * WINDOW, rng, 0, variant="control"),
              _events(CANARY, 2 * WINDOW, rng, 0, shift=1.0, slower=1.5, variant="blue"))
    exposition = generate_latest(side.registry)
    assert promtool_problems(exposition) == ""
    types = check_names(exposition.decode())
    assert types["inferwatch_variant_mismatched_events_total"] == "counter"
    assert {types[f"inferwatch_variant_{name}"] for name in ("drifted_features", "p_value", "ks_statistic",
                                                               "latency_change_ratio")} == {"gauge"}
    assert b'inferwatch_variant_p_value{model="tabular",peer="7",test="classes",version="8"}' in exposition


def test_what_is_kept_of_a_peer_window_is_a_bounded_copy() -> None:
    rng = np.random.default_rng(17)
    n = 1000
    columns = {"numeric": rng.normal(size=(n, 4)), "prediction": rng.choice(3, size=n).astype(np.int64),
               "latency": np.column_stack([rng.random(n), np.full(n, np.nan)])}
    window = ClosedWindow(key=f"{MODEL}/{CONTROL}", index=0, window_id="w0", n=n, columns=columns,
                          first_time=T0, last_time=T0 + n, reason="full")
    kept = peer_window(window, FEATURES, ("a", "b", "c"), max_rows=200)
    assert kept.features.shape == (200, 4) and kept.latency.shape == (200,)
    assert not np.shares_memory(kept.features, columns["numeric"]) and not kept.features.flags.writeable
    assert kept.class_counts.tolist() == np.bincount(columns["prediction"], minlength=3).tolist()  # all rows
    rows = [int(np.flatnonzero((columns["numeric"] == row).all(axis=1))[0]) for row in kept.features]
    assert rows == sorted(set(rows))  # distinct rows of the window, in order
    again = peer_window(window, FEATURES, ("a", "b", "c"), max_rows=200)  # a replayed window keeps the same rows
    assert np.array_equal(again.features, kept.features)
    assert peer_window(window, FEATURES, ("a", "b", "c"), max_rows=5000).features.shape == (n, 4)


def test_the_status_page_shows_the_variant_and_its_peer() -> None:
    board = StatusBoard([WatchedModelInfo(MODEL, CONTROL, "p.npz", variant="control"),
                         WatchedModelInfo(MODEL, CANARY, "p.npz", variant="<canary>", compare_with=CONTROL)])
    page = board.page().decode()
    assert '<span class="variant">control</span>' in page
    assert '<span class="variant">&lt;canary&gt;</span>' in page  # escaped like every configured value
    assert f"compared with <b>{MODEL}/{CONTROL}</b>" in page
