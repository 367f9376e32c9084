"""Reference profiles on disk: one versioned ``.npz`` file per model version.

The arrays are those of :class:`detectors.ReferenceSample`; a JSON metadata entry records the format
version, the model, and the training run that produced it, so every finding can link back to it.
Files are read with ``allow_pickle=False``: a profile is data, never code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors import ReferenceSample
from monitor.errors import ProfileError

FORMAT: str = "inferwatch.profile/v1"


@dataclass(frozen=True)
class Profile:
    """A reference sample plus what it describes."""

    reference: ReferenceSample
    model: str
    version: str
    training_run: str | None = None
    created: float = 0.0

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.reference.feature_names


def save_profile(path: str | Path, profile: Profile) -> None:
    ref = profile.reference
    meta = {
        "format": FORMAT,
        "model": profile.model,
        "version": profile.version,
        "training_run": profile.training_run,
        "created": profile.created or time.time(),
        "feature_names": list(ref.feature_names),
        "class_labels": list(ref.class_labels),
    }
    arrays: dict[str, Any] = {
        "meta": np.array(json.dumps(meta)),
        "sorted_values": ref.sorted_values,
        "edges": ref.edges,
        "proportions": ref.proportions,
    }
    if ref.class_priors is not None:
        arrays["class_priors"] = ref.class_priors
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ProfileError(f"{p}: profile format {meta.get('format')!r} is not {FORMAT!r}")
            reference = ReferenceSample(
                feature_names=tuple(meta["feature_names"]),
                sorted_values=data["sorted_values"],
                edges=data["edges"],
                proportions=data["proportions"],
                class_labels=tuple(meta["class_labels"]),
                class_priors=data["class_priors"] if "class_priors" in data.files else None,
            )
    except ProfileError:
        raise
    except FileNotFoundError as exc:
        raise ProfileError(f"profile {p} does not exist (build one with `inferwatch baseline`)") from exc
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {p} is not a readable inferwatch profile: {exc}") from exc
    n_features = len(reference.feature_names)
    if reference.sorted_values.ndim != 2 or reference.sorted_values.shape[1] != n_features:
        raise ProfileError(f"profile {p}: reference sample has shape {reference.sorted_values.shape} "
                           f"but {n_features} feature names")
    return Profile(reference=reference, model=str(meta["model"]), version=str(meta["version"]),
                   training_run=meta.get("training_run"), created=float(meta.get("created", 0.0)))
