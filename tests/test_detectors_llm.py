"""LLM quality: each kind of shift is detected and named on seeded synthetic traffic; clean traffic is clean."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import stats

from detectors.errors import StatisticsError
from detectors.llm import LLMReference, build_llm_reference, llm_quality


def _traffic(m: int, rng: np.random.Generator, length: float = 120.0, logprob: float = -1.0,
             refusal: float = 0.03, empty: float = 0.01, accept: float = 0.85) -> dict[str, np.ndarray]:
    tokens = rng.gamma(4.0, length / 4.0, m).round()  # right-skewed lengths with mean `length`
    lp = rng.normal(logprob, 0.25, m)
    lp[rng.random(m) < 0.1] = np.nan  # some servers do not return log-probs
    is_empty = rng.random(m) < empty
    tokens[is_empty] = 0.0
    return {
        "output_tokens": tokens,
        "mean_logprob": lp,
        "empty": is_empty,
        "refusal": rng.random(m) < refusal,
        "ttft_s": rng.lognormal(np.log(0.2), 0.3, m),
        "tpot_s": rng.lognormal(np.log(0.02), 0.2, m),
        "accepted": rng.random(m // 2) < accept,
    }


@pytest.fixture(scope="module")
def reference() -> LLMReference:
    t = _traffic(2000, np.random.default_rng(0))
    return build_llm_reference(t["output_tokens"], t["mean_logprob"], t["empty"], t["refusal"], t["accepted"])


def test_clean_windows_alarm_at_most_at_the_family_wise_rate(reference: LLMReference) -> None:
    rng = np.random.default_rng(1)
    results = [llm_quality(reference, **_traffic(400, rng)) for _ in range(300)]
    assert all({t.name for t in r.tests} == {"acceptance", "output_tokens", "mean_logprob", "empty", "refusal"}
               for r in results)
    alarms = sum(r.drifted for r in results)
    # Bonferroni keeps the per-window family-wise rate <= alpha = 0.01: about 3 of 300 (the reference itself is a
    # finite sample, which adds a little); 8 would be a rate the binomial puts beyond p = 0.005.
    assert alarms <= 7
    assert all(r.findings == () for r in results if not r.drifted)
    first = results[0]
    assert not first.drifted and first.findings == ()


@pytest.mark.parametrize(
    ("shift", "names", "words"),
    [
        ({"accept": 0.65}, ["acceptance"], "acceptance 0.6"),
        ({"length": 170.0}, ["output_tokens"], "output length median 1"),
        ({"logprob": -1.3}, ["mean_logprob"], "mean log-prob median -1.3 < reference -1"),
        ({"refusal": 0.15}, ["refusal"], "refusals 0.1"),
        ({"empty": 0.12}, ["output_tokens", "empty"], "empty outputs 0.1"),  # empty outputs have 0 tokens
    ],
)
def test_each_shift_is_detected_and_named(reference: LLMReference, shift: dict[str, float], names: list[str],
                                         words: str) -> None:
    res = llm_quality(reference, **_traffic(400, np.random.default_rng(2), **shift))
    assert res.drifted and [t.name for t in res.tests if t.significant] == names
    assert len(res.findings) == len(names) and any(words in f and "reference" in f for f in res.findings)


def test_p_values_are_exact_tests_bonferroni_adjusted(reference: LLMReference) -> None:
    t = _traffic(300, np.random.default_rng(3), refusal=0.1)
    res = llm_quality(reference, **t)
    refusal = res.test("refusal")
    assert refusal is not None
    p = stats.binomtest(int(t["refusal"].sum()), 300, reference.refusal_rate, alternative="greater").pvalue
    assert refusal.p_value == pytest.approx(p, rel=1e-12)
    assert refusal.p_adjusted == pytest.approx(min(1.0, 5 * p), rel=1e-12)
    length = res.test("output_tokens")
    assert length is not None
    ks = stats.ks_2samp(reference.output_tokens_sorted, t["output_tokens"])
    assert length.effect == ks.statistic and length.p_value == pytest.approx(ks.pvalue, abs=1e-9)
    assert length.value == np.median(t["output_tokens"])
    logprob = res.test("mean_logprob")
    assert logprob is not None and logprob.n == int(np.isfinite(t["mean_logprob"]).sum())  # NaN excluded
    acceptance = res.test("acceptance")
    assert acceptance is not None
    expected = stats.binomtest(int(t["accepted"].sum()), 150, reference.acceptance_rate, alternative="less").pvalue
    assert acceptance.p_value == pytest.approx(expected, rel=1e-12)


def test_significant_but_small_effects_do_not_count(reference: LLMReference) -> None:
    # 20000 outputs: a 3-point rise in refusals is highly significant but below min_effect = 0.05.
    res = llm_quality(reference, **_traffic(20000, np.random.default_rng(4), refusal=0.06))
    refusal = res.test("refusal")
    assert refusal is not None and refusal.p_adjusted < 1e-10 and not refusal.significant
    assert llm_quality(reference, **_traffic(20000, np.random.default_rng(4), refusal=0.06),
                       min_effect=0.02).drifted


def test_latency_percentiles_ignore_nan(reference: LLMReference) -> None:
    t = _traffic(200, np.random.default_rng(5))
    t["ttft_s"][:50] = np.nan
    t["tpot_s"][:] = np.nan
    res = llm_quality(reference, **t)
    np.testing.assert_allclose([res.ttft_s.p50, res.ttft_s.p95, res.ttft_s.p99],
                               np.nanpercentile(t["ttft_s"], [50, 95, 99]))
    assert res.ttft_s.n == 150 and res.tpot_s.n == 0 and np.isnan(res.tpot_s.p99)


def test_small_windows_and_missing_feedback_skip_tests(reference: LLMReference) -> None:
    t = _traffic(20, np.random.default_rng(6), refusal=0.9)
    res = llm_quality(reference, **t)
    assert res.tests == () and not res.drifted and set(res.skipped) == {
        "acceptance", "output_tokens", "mean_logprob", "empty", "refusal"}
    t = _traffic(100, np.random.default_rng(6))
    del t["accepted"]
    assert llm_quality(reference, **t).skipped == ("acceptance",)


def test_reference_round_trips_through_npz_without_pickle(reference: LLMReference) -> None:
    no_feedback = build_llm_reference([5, 1], [np.nan, np.nan], [False, False], [True, False])
    for ref in (reference, no_feedback):
        buffer = io.BytesIO()
        np.savez(buffer, **ref.to_arrays())
        buffer.seek(0)
        with np.load(buffer, allow_pickle=False) as data:
            loaded = LLMReference.from_arrays({k: data[k] for k in data.files})
        np.testing.assert_array_equal(loaded.output_tokens_sorted, ref.output_tokens_sorted)
        np.testing.assert_array_equal(loaded.mean_logprob_sorted, ref.mean_logprob_sorted)
        assert (loaded.empty_rate, loaded.refusal_rate, loaded.acceptance_rate) == (
            ref.empty_rate, ref.refusal_rate, ref.acceptance_rate)
    assert no_feedback.acceptance_rate is None and no_feedback.mean_logprob_sorted.size == 0


def test_bad_input_is_rejected(reference: LLMReference) -> None:
    t = _traffic(50, np.random.default_rng(7))
    with pytest.raises(StatisticsError, match="empty has 49 entries but output_tokens has 50"):
        llm_quality(reference, **{**t, "empty": t["empty"][:-1]})
    with pytest.raises(StatisticsError, match="output_tokens contains non-finite"):
        llm_quality(reference, **{**t, "output_tokens": np.full(50, np.nan)})
    with pytest.raises(StatisticsError, match="ascending"):
        LLMReference(np.array([2.0, 1.0]), np.zeros(0), 0.0, 0.0)
