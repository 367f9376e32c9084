"""The one exception type of the statistics package.

This module deliberately imports nothing from the ``monitor`` package: ``detectors`` is a pure
statistics library that the daemon depends on, never the other way round.
"""

from __future__ import annotations

__all__ = ["StatisticsError"]


class StatisticsError(ValueError):
    """Invalid input to a statistic: wrong shape, non-finite values, bad parameters.

    Subclasses :class:`ValueError` so that callers that already handle ``ValueError`` keep working.

    Examples
    --------
    >>> from detectors.errors import StatisticsError
    >>> issubclass(StatisticsError, ValueError)
    True
    """
