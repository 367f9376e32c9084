"""The refusal check the collectors run at capture (no statistics, no scipy)."""

from __future__ import annotations

import pytest

from collectors.refusal import REFUSAL_PATTERNS, is_refusal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("  i cannot assist with this request", True),
        ("\u201cI\u2019m unable to provide that.\u201d", False),  # curly double quote is not stripped: conservative
        ('"I\u2019m unable to provide that."', True),
        ("**As an AI language model**, I do not have opinions.", True),
        ("Unfortunately, I can't do that.", True),
        ("Sure! Here is the summary you asked for.", False),
        ("The patient said: I cannot sleep.", False),  # refusal words, but not an opening
        ("Sorry for the delay: the answer is 42.", False),
        ("", False),
    ],
)
def test_is_refusal(text: str, expected: bool) -> None:
    assert is_refusal(text) is expected


def test_refusal_patterns_are_lower_case_and_match_themselves() -> None:
    assert all(p == p.lower() and is_refusal(p.upper()) for p in REFUSAL_PATTERNS)
