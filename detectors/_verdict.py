"""The verdict of a window result made of per-feature decisions (private)."""

from __future__ import annotations

from typing import Protocol


class _Decision(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def drifted(self) -> bool: ...


class PerFeatureVerdict:
    """Mixin of a frozen result over named features: a window drifted when any feature did, never when the window
    was insufficient."""

    features: tuple[_Decision, ...]
    insufficient: bool

    @property
    def drifted(self) -> bool:
        """True when any feature drifted (always False for an insufficient window)."""
        return not self.insufficient and any(f.drifted for f in self.features)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted features, in feature order."""
        return tuple(f.name for f in self.features if f.drifted)
