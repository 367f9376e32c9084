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
    """The embedding drift detector on hashed n-grams: same-domain windows pass, another domain is found."""
    pytest.importorskip("torch")
    from detectors.mmd import MMDDetector

    rng = np.random.default_rng(3)
    embed = lambda texts: np.stack([hashed_ngrams(t) for t in texts])  # noqa: E731
    detector = MMDDetector(embed(prompts("plays", 300, rng)), permutations=200, device="cpu", seed=0)
    same = [detector.test(embed(prompts("plays", 60, rng))) for _ in range(5)]
    assert not any(r.drifted for r in same), [r.p_value for r in same]
    shifted = detector.test(embed(prompts("code", 60, rng)))
    assert shifted.drifted and shifted.p_value < 0.01
