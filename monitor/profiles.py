"""Reference profiles on disk: one versioned ``.npz`` file per model version.

A profile holds what the detectors compare live windows with, built by ``inferwatch baseline`` from
training or validation data and the model's outputs on it: the numeric reference sample (sorted, with
quantile bins) and class priors, categorical level frequencies, the probability calibration map and the
reference accuracy (for label-free performance estimation), a reference embedding sample and its kernel
bandwidth, and reference LLM distributions. Every part except the metadata is optional.

Arrays are stored under a prefix per part (``categorical.levels``, ``calibrator.temperature``, ...); a JSON
``meta`` entry records the format version, the model, the training run, and scalars. Files are read with
``allow_pickle=False``: a profile is data, never code.
"""

from __future__ import annotations

import json
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors import Calibrator, CategoricalReference, LLMReference, ReferenceSample
from monitor.errors import ProfileError

FORMAT: str = "inferwatch.profile/v2"
_READABLE = ("inferwatch.profile/v1", FORMAT)


@dataclass(frozen=True)
class Profile:
    """What a model version's live traffic is compared with."""

    model: str
    version: str
    reference: ReferenceSample | None = None
    categorical: CategoricalReference | None = None
    calibrator: Calibrator | None = None
    reference_accuracy: float | None = None
    embeddings: np.ndarray | None = None  # (n, d) reference embedding sample
    embedding_bandwidth: float | None = None
    llm: LLMReference | None = None
    training_run: str | None = None
    created: float = 0.0
    # The reference's own label-free estimate (CBPE through the calibrator) and its per-row spread, and the
    # expected calibration error of the calibrated reference probabilities; None in profiles built before.
    reference_estimate: float | None = None
    reference_estimate_sd: float | None = None
    calibration_ece: float | None = None
    # The training run the reference came from (``TrainingRun.to_dict()``: id, url, name, source, its own
    # metrics such as accuracy or loss), and the first and last event time (Unix seconds) of a reference built
    # from captured traffic; None when not known (and in profiles written before).
    training_run_info: dict[str, Any] | None = None
    reference_period: tuple[float, float] | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return () if self.reference is None else self.reference.feature_names

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return () if self.categorical is None else tuple(self.categorical.feature_names)

    @property
    def class_labels(self) -> tuple[str, ...]:
        return () if self.reference is None else self.reference.class_labels

    def describe(self) -> str:
        parts = [f"{len(self.feature_names)} numeric features"]
        if self.categorical_names:
            parts.append(f"{len(self.categorical_names)} categorical")
        if self.class_labels:
            parts.append(f"{len(self.class_labels)} classes")
        if self.reference is not None and self.reference.missing_counts is not None and \
                self.reference.missing_counts.any():
            rates = self.reference.missing_rates
            worst = int(rates.argmax())
            parts.append(f"{int((rates > 0).sum())} feature(s) with missing values (up to {rates[worst]:.1%} in "
                         f"{self.reference.feature_names[worst]})")
        if self.calibrator is not None:
            ece = "" if self.calibration_ece is None else f" (ECE {self.calibration_ece:.3f} on the reference)"
            parts.append(f"{self.calibrator.method} calibration{ece}")
        if self.reference_accuracy is not None:
            parts.append(f"reference accuracy {self.reference_accuracy:.3f}")
        if self.reference_estimate is not None:
            parts.append(f"estimated reference accuracy {self.reference_estimate:.3f} (label-free, compared with "
                         "each window's estimate)")
        if self.embeddings is not None:
            parts.append(f"{self.embeddings.shape[0]}x{self.embeddings.shape[1]} embeddings")
        if self.llm is not None:
            parts.append("LLM output distributions")
        return ", ".join(parts)


def save_profile(path: str | Path, profile: Profile) -> None:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "model": profile.model,
        "version": profile.version,
        "training_run": profile.training_run,
        "created": profile.created or time.time(),
        "reference_accuracy": profile.reference_accuracy,
        "embedding_bandwidth": profile.embedding_bandwidth,
        "reference_estimate": profile.reference_estimate,
        "reference_estimate_sd": profile.reference_estimate_sd,
        "calibration_ece": profile.calibration_ece,
        "training_run_info": profile.training_run_info,
        "reference_period": None if profile.reference_period is None else list(profile.reference_period),
    }
    arrays: dict[str, Any] = {}
    ref = profile.reference
    if ref is not None:
        meta["feature_names"] = list(ref.feature_names)
        meta["class_labels"] = list(ref.class_labels)
        arrays.update({"sorted_values": ref.sorted_values, "edges": ref.edges, "proportions": ref.proportions})
        if ref.class_priors is not None:
            arrays["class_priors"] = ref.class_priors
        if ref.class_counts is not None:
            arrays["class_counts"] = ref.class_counts
        if ref.missing_counts is not None:
            arrays["missing_counts"] = ref.missing_counts
            meta["n_rows"] = ref.n_rows
    for prefix, part in (("categorical", profile.categorical), ("calibrator", profile.calibrator),
                         ("llm", profile.llm)):
        if part is not None:
            arrays.update({f"{prefix}.{k}": v for k, v in part.to_arrays().items()})
    if profile.embeddings is not None:
        arrays["embeddings"] = np.asarray(profile.embeddings, dtype=np.float32)
    arrays["meta"] = np.array(json.dumps(meta))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by :func:`save_profile`; anything else (a missing, empty, truncated or foreign
    file) raises :class:`ProfileError` with a message that says what is wrong with the file."""
    p = Path(path)
    try:
        _check_archive(p)
        with np.load(p, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") not in _READABLE:
            raise ProfileError(f"{p}: profile format {meta.get('format')!r} is not one of {', '.join(_READABLE)}")
        reference = None
        if "sorted_values" in arrays:
            reference = ReferenceSample(
                feature_names=tuple(meta["feature_names"]), sorted_values=arrays["sorted_values"],
                edges=arrays["edges"], proportions=arrays["proportions"],
                class_labels=tuple(meta.get("class_labels", ())), class_priors=arrays.get("class_priors"),
                class_counts=arrays.get("class_counts"), missing_counts=arrays.get("missing_counts"),
                n_rows=meta.get("n_rows"))
        categorical = _part(arrays, "categorical")
        calibrator = _part(arrays, "calibrator")
        llm = _part(arrays, "llm")
        profile = Profile(
            model=str(meta["model"]), version=str(meta["version"]), reference=reference,
            categorical=CategoricalReference.from_arrays(categorical) if categorical else None,
            calibrator=Calibrator.from_arrays(calibrator) if calibrator else None,
            reference_accuracy=meta.get("reference_accuracy"),
            embeddings=arrays.get("embeddings"), embedding_bandwidth=meta.get("embedding_bandwidth"),
            llm=LLMReference.from_arrays(llm) if llm else None,
            training_run=meta.get("training_run"), created=float(meta.get("created", 0.0)),
            reference_estimate=meta.get("reference_estimate"), reference_estimate_sd=meta.get("reference_estimate_sd"),
            calibration_ece=meta.get("calibration_ece"), training_run_info=meta.get("training_run_info"),
            reference_period=_period(meta.get("reference_period")))
    except ProfileError:
        raise
    except FileNotFoundError as exc:
        raise ProfileError(f"profile {p} does not exist (build one with `inferwatch baseline`)") from exc
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ProfileError(f"profile {p} is truncated or corrupt (not a complete .npz archive): {exc}; "
                           f"rebuild it with `inferwatch baseline`") from exc
    except KeyError as exc:
        raise ProfileError(f"profile {p} is not a readable inferwatch profile: it lacks the entry {exc}") from exc
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as exc:
        # numpy's message for object arrays suggests `allow_pickle`: a profile is data, never code.
        detail = "it holds Python objects, which a profile never does" if "pickle" in str(exc) else str(exc)
        raise ProfileError(f"profile {p} is not a readable inferwatch profile: {detail}") from exc
    return profile


def _check_archive(p: Path) -> None:
    """A profile is an ``.npz`` (zip) archive: refuse an empty or foreign file before numpy guesses its type."""
    with open(p, "rb") as f:
        head = f.read(4)
    if not head:
        raise ProfileError(f"profile {p} is empty (0 bytes); rebuild it with `inferwatch baseline`")
    if head != b"PK\x03\x04":
        raise ProfileError(f"profile {p} is not an inferwatch profile: not an .npz archive (it starts with "
                           f"{head!r}); build one with `inferwatch baseline`")


def _period(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"reference_period must be [first, last] event time, got {value!r}")
    return float(value[0]), float(value[1])


def _part(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name.removeprefix(f"{prefix}."): v for name, v in arrays.items() if name.startswith(f"{prefix}.")}
