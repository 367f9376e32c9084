"""Whether a generated text opens like a refusal: a pure string check, shared by the collectors and the demo.

It lives in ``collectors`` (not ``detectors``) because the sidecar and the generate-loop hook flag refusals as
they capture, and collectors never import the statistics (which pull in scipy).
"""

from __future__ import annotations

__all__ = ["REFUSAL_PATTERNS", "is_refusal"]

#: Openings of a refusal, lower case.  :func:`is_refusal` lower-cases the output, straightens curly
#: apostrophes and strips leading whitespace, quotes and markdown emphasis before matching the start.
#: Deliberately conservative (openings only, not "cannot" anywhere): a false refusal is worse than a miss.
REFUSAL_PATTERNS: tuple[str, ...] = (
    "i'm sorry",
    "i am sorry",
    "sorry, but",
    "sorry, i",
    "i apologize",
    "i apologise",
    "my apologies",
    "i cannot",
    "i can't",
    "i can not",
    "i won't",
    "i will not",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i'm afraid i can",
    "unfortunately, i can",
    "as an ai",
    "as a language model",
    "as an ai language model",
)


def is_refusal(text: str) -> bool:
    """Whether a model output opens like a refusal (see :data:`REFUSAL_PATTERNS`).

    Examples
    --------
    >>> is_refusal("  I’m sorry, but I can’t help with that."), is_refusal("Sorry for the wait: here it is.")
    (True, False)
    """
    opening = text[:80].lower().replace("\u2019", "'").lstrip(" \t\r\n\"'*_>`")
    return opening.startswith(REFUSAL_PATTERNS)
