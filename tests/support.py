"""Helpers shared by the pipeline, daemon and end-to-end tests: a seeded reference and event streams."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from detectors import build_reference
from monitor.events import InferenceEvent, Latency
from monitor.profiles import Profile, save_profile

FEATURES = ("f0", "f1", "f2", "f3")
PRIORS = np.array([0.5, 0.3, 0.2])
MODEL, VERSION = "tabular", "7"


def write_profile(folder: Path, seed: int = 0, n: int = 5000) -> Path:
    """A profile of four standard-normal features and a 3-class prediction mix (0.5, 0.3, 0.2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    predictions = rng.choice(3, size=n, p=PRIORS)
    path = folder / "tabular.profile.npz"
    save_profile(path, Profile(reference=build_reference(x, FEATURES, predictions=predictions,
                                                         class_labels=["a", "b", "c"]),
                               model=MODEL, version=VERSION, training_run="runs/42"))
    return path


def events(n: int, rng: np.random.Generator, shift: float = 0.0, shifted: tuple[int, ...] = (1,),
           start: float = 1_700_000_000.0, model: str = MODEL) -> list[InferenceEvent]:
    """``n`` events like the reference; ``shift`` standard deviations added to the ``shifted`` features."""
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, list(shifted)] += shift
    predictions = rng.choice(3, size=n, p=PRIORS)
    return [InferenceEvent(request_id=uuid.uuid4().hex, time=start + i, model=model, version=VERSION,
                           task="classification", features=dict(zip(FEATURES, map(float, row), strict=True)),
                           prediction=int(p), latency=Latency(total_s=0.001))
            for i, (row, p) in enumerate(zip(x, predictions, strict=True))]
