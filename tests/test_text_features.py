"""Text features from prompts and completions alone: the hashed n-gram embedding against a plain-Python reference,
stable across processes; the character mix; and a prompt-domain shift the MMD detector finds from them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from collectors.text_features import CHAR_CLASSES, DIMS, char_mix, hashed_ngrams, normalise, text_features

M64 = (1 << 64) - 1


def reference_embedding(text: str, dims: int = DIMS, n: int = 3) -> list[float]:
    """The same hashing, one n-gram at a time in Python integers (mod 2**64): what the numpy code must equal."""
    codes = [ord(c) for c in normalise(text)]
    out = [0.0] * dims
    for start in range(len(codes) - n + 1):
        h = 0
        for c in codes[start:start + n]:
            h = (h * 1_000_003 + c) & M64
        h = (h * 0x9E3779B97F4A7C15) & M64
        h ^= h >> 29
        out[h % dims] += -1.0 if h >> 63 else 1.0
    norm = sum(v * v for v in out) ** 0.5
    return [v / norm for v in out] if norm else out


@pytest.mark.parametrize("text", ["", "ab", "abc", "The quick brown fox jumps over the lazy dog.",
                                  "def f(x):\n    return x ** 2  # square", "Привет, мир! 你好，世界 🌍🌍",
                                  "a" * 5000])
def test_the_embedding_equals_the_plain_python_reference(text: str) -> None:
    assert np.allclose(hashed_ngrams(text), reference_embedding(text), atol=1e-12)
    assert np.allclose(hashed_ngrams(text, dims=7, n=2), reference_embedding(text, dims=7, n=2), atol=1e-12)


def test_the_embedding_is_the_same_in_every_process() -> None:
    code = "from collectors.text_features import hashed_ngrams; print(hashed_ngrams('prompt drift', 32).tolist())"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {f"{hashed_ngrams('prompt drift', 32).tolist()}\n"}


def test_the_character_mix_names_scripts_digits_space_and_punctuation() -> None:
    assert char_mix("") == (0.0,) * len(CHAR_CLASSES)
    mix = dict(zip(CHAR_CLASSES, char_mix("Abc 12!? Жж٣"), strict=True))
    assert mix == pytest.approx({"ascii_letter": 3 / 12, "digit": 3 / 12, "space": 2 / 12, "punctuation": 2 / 12,
                                 "other_letter": 2 / 12, "other": 0.0})
    features = text_features("hello world")
    assert features.chars == 11 and sum(features.mix) == pytest.approx(1.0)
    assert features.embedding.shape == (DIMS,)
    with pytest.raises(ValueError, match="dims and n"):
        hashed_ngrams("x", dims=0)


def prompts(domain: str, n: int, rng: np.random.Generator) -> list[str]:
    """Seeded prompts of a domain: questions about plays, or requests about code."""
    if domain == "plays":
        subjects = ["Hamlet", "Ophelia", "the king", "Macbeth", "the queen", "Romeo", "the ghost", "Juliet"]
        verbs = ["speak of", "say to", "think about", "fear", "love", "betray", "remember"]
        return [f"What does {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(subjects)} in act "
                f"{rng.integers(1, 6)}?" for _ in range(n)]
    funcs = ["parse_config", "load_rows", "merge_frames", "retry_request", "hash_file", "train_step"]
    langs = ["Python", "Rust", "Go", "TypeScript"]
    return [f"Write a {rng.choice(langs)} function {rng.choice(funcs)}(x, y) that returns x + {rng.integers(9)} "
            f"and raises ValueError on None." for _ in range(n)]


def test_a_prompt_domain_shift_is_found_from_the_text_features_alone() -> None:
    """The embedding drift detector on hashed n-grams (numpy: no torch needed): same-domain windows pass, another
    domain is found."""
    from detectors.mmd import MMDDetector

    rng = np.random.default_rng(3)
    embed = lambda texts: np.stack([hashed_ngrams(t) for t in texts])  # noqa: E731
    detector = MMDDetector(embed(prompts("plays", 300, rng)), permutations=200, backend="numpy", seed=0)
    same = [detector.test(embed(prompts("plays", 60, rng))) for _ in range(5)]
    assert not any(r.drifted for r in same), [r.p_value for r in same]
    shifted = detector.test(embed(prompts("code", 60, rng)))
    assert shifted.drifted and shifted.p_value < 0.01


def _completion_exchange(prompt: str, text: str, usage: bool = True):  # type: ignore[no-untyped-def]
    import json

    from collectors.sidecar import Exchange

    answer = {"id": "c", "object": "text_completion", "model": "m",
              "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
    if usage:
        answer["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    body = json.dumps(answer).encode()
    return Exchange(route="completions", path="/v1/completions", request_id="r-1", time=1.0,
                    request_body=json.dumps({"model": "m", "prompt": prompt}).encode(), status=200,
                    response_body=body, event_stream=False, pieces=[(0.01, len(body))], started=0.0, finished=0.02)


def test_the_sidecar_attaches_the_text_features_of_a_completion_and_can_leave_them_out() -> None:
    from prometheus_client import CollectorRegistry

    from collectors.sidecar import Capturer, SidecarConfig, sidecar_metrics
    from collectors.text_features import generation_feature_names, generation_features

    prompt, text = "How do I reset my password?\n", "Click 'Forgot password' on the login page."
    capturer = Capturer(SidecarConfig(), sidecar_metrics(CollectorRegistry()))
    (event,) = capturer.capture(_completion_exchange(prompt, text))
    features, embedding = generation_features(prompt, text, prompt_tokens=7)
    assert event.features == features and tuple(event.features) == generation_feature_names()
    assert event.embedding == embedding and len(embedding) == DIMS
    assert np.allclose(event.embedding, hashed_ngrams(prompt), atol=5e-5)  # rounded to 4 decimals
    assert event.payload is None  # the text itself does not leave (payload_sample_rate 0)
    # the server reported no usage on a stream: the token count is missing, not guessed
    assert "prompt.tokens" not in generation_features(prompt, text, None)[0]

    off = Capturer(SidecarConfig(text_features=False), sidecar_metrics(CollectorRegistry()))
    (plain,) = off.capture(_completion_exchange(prompt, text))
    assert plain.features == {} and plain.embedding is None and plain.generation == event.generation


def test_a_profile_takes_the_text_features_it_knows_and_ignores_the_rest() -> None:
    """Generation events carry text features; a profile built before them (LLM columns only) must still take them,
    and one built with some of them takes those. A classifier event's unknown feature stays a mismatch."""
    from detectors import build_llm_reference
    from monitor.config import DetectConfig, WindowConfig
    from monitor.evaluation import EventError, WatchedModel
    from monitor.events import Generation, InferenceEvent
    from monitor.offline import build_profile
    from monitor.profiles import Profile

    rng = np.random.default_rng(0)
    llm = build_llm_reference(rng.integers(10, 60, 200).astype(float), rng.normal(-1.5, 0.2, 200),
                              np.zeros(200, bool), np.zeros(200, bool))
    features, embedding = generation_features_of("What does Hamlet fear?", "Death, my lord.")
    event = InferenceEvent(request_id="r", time=1.0, model="m", version="1", task="generation", features=features,
                           embedding=embedding, generation=Generation(prompt_tokens=22, output_tokens=15,
                                                                       output_chars=15))
    old = WatchedModel(Profile(model="m", version="1", llm=llm), DetectConfig(), WindowConfig())
    values = old.values(event)
    assert not isinstance(values, EventError) and values["numeric"] == [] and "llm" in values

    from monitor.datafiles import Table
    names = ("prompt.chars", "prompt.digit")
    table = Table(x=rng.random((200, 2)) * [80, 0.1], feature_names=names, embeddings=rng.normal(size=(200, DIMS)))
    partial = WatchedModel(build_profile(table, "m", "1"), DetectConfig(), WindowConfig())
    values = partial.values(event)
    assert not isinstance(values, EventError)
    assert values["numeric"] == [features["prompt.chars"], features["prompt.digit"]]
    assert values["embedding"] == embedding

    classifier = InferenceEvent(request_id="c", time=1.0, model="m", version="1", task="classification",
                                features={"prompt.chars": 3.0, "x": 1.0})
    mismatch = partial.values(classifier)
    assert isinstance(mismatch, EventError) and mismatch.reason == "feature_mismatch"


def generation_features_of(prompt: str, completion: str) -> tuple[dict[str, float | None], list[float]]:
    from collectors.text_features import generation_features

    return generation_features(prompt, completion, prompt_tokens=len(prompt))


def test_a_generation_embedding_of_another_width_is_left_out_not_rejected() -> None:
    """A profile holding a model's own 8-dim prompt embeddings, and sidecar events with the 256-dim text hash."""
    from monitor.config import DetectConfig, WindowConfig
    from monitor.datafiles import Table
    from monitor.evaluation import EventError, WatchedModel
    from monitor.events import Generation, InferenceEvent
    from monitor.offline import build_profile

    rng = np.random.default_rng(1)
    profile = build_profile(Table(x=np.empty((100, 0)), feature_names=(), embeddings=rng.normal(size=(100, 8))),
                            "m", "1")
    model = WatchedModel(profile, DetectConfig(), WindowConfig())
    features, embedding = generation_features_of("Hello there", "General Kenobi.")
    generation = InferenceEvent(request_id="g", time=1.0, model="m", version="1", task="generation",
                                features=features, embedding=embedding,
                                generation=Generation(prompt_tokens=11, output_tokens=15, output_chars=15))
    values = model.values(generation)
    assert not isinstance(values, EventError) and "embedding" not in values
    own = msgspec_replace(generation, embedding=[0.5] * 8)
    values = model.values(own)
    assert not isinstance(values, EventError) and values["embedding"] == [0.5] * 8
    wrong = InferenceEvent(request_id="c", time=1.0, model="m", version="1", task="classification", embedding=[1.0])
    rejected = model.values(wrong)
    assert isinstance(rejected, EventError) and rejected.reason == "invalid_value"


def msgspec_replace(event, **changes):  # type: ignore[no-untyped-def]
    import msgspec

    return msgspec.structs.replace(event, **changes)
