"""Features of a prompt or a completion computed from the text alone (no model, no torch, no scipy), so that the
sidecar can show what an LLM's traffic is about and the embedding (MMD) detector can find a prompt-domain shift.

* :func:`char_mix`: the fractions of the text's characters that are ASCII letters, digits, whitespace,
  punctuation, letters of other scripts, and anything else (six numbers summing to 1; zeros for an empty text);
* :func:`hashed_ngrams`: a fixed-size embedding by signed feature hashing of character n-grams (Weinberger et al.,
  2009): the text is lower-cased and its whitespace runs collapsed, each n-gram adds +1 or -1 to the bucket a
  stable hash of its code points picks, and the vector is scaled to unit length. The hash is computed for all
  n-grams at once with numpy (no Python call per character) and is the same in every process and on every
  machine, unlike Python's ``hash``;
* :func:`text_features`: both, with the length in characters, for one text;
* :func:`generation_features`: what the sidecar attaches to a completion's event: the prompt's and the
  completion's length and character mix as named features (:func:`generation_feature_names`), and the prompt's
  embedding rounded to 4 decimals (what the detector needs, at about a third of the bytes on the wire).

>>> v = hashed_ngrams("The quick brown fox", dims=16)
>>> v.shape, round(float((v ** 2).sum()), 6)
((16,), 1.0)
>>> bool((hashed_ngrams("THE  quick brown\\tfox", dims=16) == v).all())   # case and whitespace runs do not count
True
>>> [round(x, 3) for x in char_mix("Hi 2 u!")]
[0.429, 0.143, 0.286, 0.143, 0.0, 0.0]
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

DIMS = 256
NGRAM = 3
CHAR_CLASSES = ("ascii_letter", "digit", "space", "punctuation", "other_letter", "other")
_WHITESPACE = re.compile(r"\s+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio): spreads the polynomial hash's bits
_BASE = np.uint64(1_000_003)


@dataclass(frozen=True)
class TextFeatures:
    """What one text looks like: its length in characters, its character mix and its hashed n-gram embedding."""

    chars: int
    mix: tuple[float, ...]  # fractions per :data:`CHAR_CLASSES`
    embedding: np.ndarray  # (dims,) unit length, or zeros for a text too short for one n-gram


def normalise(text: str) -> str:
    """Lower-cased, whitespace runs collapsed to one space, stripped."""
    return _WHITESPACE.sub(" ", text).strip().lower()


def hashed_ngrams(text: str, dims: int = DIMS, n: int = NGRAM) -> np.ndarray:
    """The signed hashed character ``n``-gram embedding of ``text`` (see the module docstring); (dims,) float64."""
    if dims < 1 or n < 1:
        raise ValueError(f"dims and n must be >= 1, got {dims} and {n}")
    codes = np.frombuffer(normalise(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)  # (L,)
    out = np.zeros(dims)
    if len(codes) < n:
        return out
    h = np.zeros(len(codes) - n + 1, dtype=np.uint64)  # (L - n + 1,) polynomial hash of each n-gram, mod 2**64
    for i in range(n):
        h = h * _BASE + codes[i: len(codes) - n + 1 + i]
    h *= _MIX
    h ^= h >> np.uint64(29)
    buckets = (h % np.uint64(dims)).astype(np.intp)
    signs = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
    out = np.bincount(buckets, weights=signs, minlength=dims).astype(np.float64)
    norm = float(np.sqrt(out @ out))
    return out / norm if norm > 0 else out


def char_mix(text: str) -> tuple[float, ...]:
    """Fractions of ``text``'s characters in each of :data:`CHAR_CLASSES` (all zero for an empty text)."""
    counts = [0] * len(CHAR_CLASSES)
    for ch in text:
        if ch.isascii():
            index = 0 if ch.isalpha() else 1 if ch.isdigit() else 2 if ch.isspace() else \
                3 if unicodedata.category(ch).startswith(("P", "S")) else 5
        else:
            category = unicodedata.category(ch)
            index = 4 if category.startswith("L") else 1 if category == "Nd" else 2 if ch.isspace() else \
                3 if category.startswith(("P", "S")) else 5
        counts[index] += 1
    total = len(text)
    return tuple(c / total if total else 0.0 for c in counts)


def text_features(text: str, dims: int = DIMS, n: int = NGRAM) -> TextFeatures:
    """:class:`TextFeatures` of one text."""
    return TextFeatures(chars=len(text), mix=char_mix(text), embedding=hashed_ngrams(text, dims, n))


def generation_feature_names(tokens: bool = True) -> tuple[str, ...]:
    """Names of :func:`generation_features`' features, in order (``prompt.tokens`` only with ``tokens``)."""
    return ("prompt.chars", *(("prompt.tokens",) if tokens else ()), "completion.chars",
            *(f"prompt.{c}" for c in CHAR_CLASSES), *(f"completion.{c}" for c in CHAR_CLASSES))


def generation_features(prompt: str, completion: str, prompt_tokens: int | None = None,
                        dims: int = DIMS) -> tuple[dict[str, float | None], list[float]]:
    """Features and prompt embedding of one completion: ``({name: value}, embedding)``.

    ``prompt_tokens`` is the server's count (``usage.prompt_tokens``); ``None`` when it reported none, and then
    the feature is left out (missing) rather than guessed.

    >>> features, embedding = generation_features("Hi there", "Hello!", prompt_tokens=3, dims=8)
    >>> features["prompt.chars"], features["prompt.tokens"], features["completion.punctuation"], len(embedding)
    (8.0, 3.0, 0.16666666666666666, 8)
    """
    features: dict[str, float | None] = {"prompt.chars": float(len(prompt))}
    if prompt_tokens is not None:
        features["prompt.tokens"] = float(prompt_tokens)
    features["completion.chars"] = float(len(completion))
    for prefix, text in (("prompt", prompt), ("completion", completion)):
        features.update(zip((f"{prefix}.{c}" for c in CHAR_CLASSES), char_mix(text), strict=True))
    return features, np.round(hashed_ngrams(prompt, dims), 4).tolist()
