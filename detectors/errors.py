"""The one exception type of the statistics package.

``detectors`` is a pure statistics library that the daemon depends on, never the other way round. The one
exception to that is :mod:`monitor.errors`, a leaf module with no imports of its own that holds the root of
inferwatch's exception hierarchy, so that every error inferwatch raises on purpose is an
:class:`~monitor.errors.InferwatchError`.
"""

from __future__ import annotations

from monitor.errors import InferwatchError

__all__ = ["InferwatchError", "StatisticsError"]


class StatisticsError(InferwatchError, ValueError):
    """Invalid input to a statistic: wrong shape, non-finite values, bad parameters.

    Subclasses :class:`ValueError` so that callers that already handle ``ValueError`` keep working.

    Examples
    --------
    >>> from detectors.errors import StatisticsError
    >>> issubclass(StatisticsError, ValueError)
    True
    >>> issubclass(StatisticsError, InferwatchError)
    True
    """
