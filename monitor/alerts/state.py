"""Alert state that survives restarts: one small JSON document per fingerprint.

A store is read once at start (:meth:`StateStore.load`) and told about every fingerprint whose state changed
(:meth:`StateStore.save`); a state of ``None`` deletes the fingerprint. On the embedded bus the store is a local
file rewritten atomically (write a temporary file beside it, fsync, rename); on Kafka it is a compacted topic
keyed by fingerprint (:mod:`monitor.alerts.topic_state`), where a deletion is a tombstone.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from monitor.errors import ConfigError

log = logging.getLogger(__name__)

State = dict[str, Any]


class StateStore(Protocol):
    def load(self) -> dict[str, State]:
        """Every fingerprint's last saved state."""
        ...

    def save(self, changed: Mapping[str, State | None]) -> None:
        """Persist the changed fingerprints (``None``: forget it); durable when this returns."""
        ...

    def close(self) -> None:
        """Release what the store holds open; idempotent."""
        ...


class MemoryStore:
    """No persistence (no ``alerts.state.path`` on the embedded bus): state lives as long as the process."""

    def __init__(self) -> None:
        self.states: dict[str, State] = {}

    def load(self) -> dict[str, State]:
        return dict(self.states)

    def save(self, changed: Mapping[str, State | None]) -> None:
        for fingerprint, state in changed.items():
            if state is None:
                self.states.pop(fingerprint, None)
            else:
                self.states[fingerprint] = state

    def close(self) -> None:
        return None


class FileStore(MemoryStore):
    """The whole state in one JSON file, replaced atomically on every save.

    An unreadable or corrupt file at start is an error naming it (``alerts.state.path``): starting with no state
    would re-send every firing alert and never resolve them."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def load(self) -> dict[str, State]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.info("alert state %s does not exist yet: starting with no alerts firing", self.path)
            return {}
        except OSError as exc:
            raise ConfigError(f"alerts.state.path: cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("schema") != "inferwatch.alert-state/v1":
                raise ValueError("not an inferwatch alert state file")
            states = data["fingerprints"]
            if not isinstance(states, dict) or not all(isinstance(v, dict) for v in states.values()):
                raise ValueError("fingerprints is not a mapping of states")
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"alerts.state.path: {self.path} is not a valid alert state file ({exc}); move it "
                              f"aside to start without alert state") from exc
        self.states = states
        return dict(states)

    def save(self, changed: Mapping[str, State | None]) -> None:
        super().save(changed)
        body = json.dumps({"schema": "inferwatch.alert-state/v1", "fingerprints": self.states},
                          sort_keys=True, allow_nan=False).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
