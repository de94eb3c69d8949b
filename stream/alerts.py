"""Alerts: the published schema, deterministic ids, severity, per-user cooldown.

An alert's id is a hash of (user, model version, the event that completed the window) -
the same recorded log scored by the same model gives the same ids offline and online,
and consumers of the at-least-once alert stream can drop duplicates by id.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

from stream.explain import Summary
from stream.severities import SEVERITIES

SCHEMA_VERSION = 1
MAX_WINDOW_EVENTS_IN_ALERT = 16


def schema() -> dict:
    """The alert JSON Schema (stream/schemas/alert.schema.json)."""
    return json.loads(resources.files("stream").joinpath("schemas/alert.schema.json").read_text())


def alert_id(user_id: str, model_version: str, trigger_event: str) -> str:
    """Deterministic id: same input event + same model => same id."""
    h = hashlib.sha256(f"{user_id}\x1f{model_version}\x1f{trigger_event}".encode())
    return h.hexdigest()[:32]


def severity(score: float, steps: list[float]) -> str:
    """Severity from where a score sits among the model's calibrated steps.

    ``steps`` (meta.json ``severity``) are the scores reached by the calibration's normal
    users at the alert budget (low, = the threshold), a quarter of it (medium), a
    sixteenth (high), and beyond every normal user seen (critical): a severity says how
    rarely normal users score this high, whatever the model kind.
    """
    return SEVERITIES[max(0, sum(score >= s for s in steps[1:4]))]


@dataclass
class Cooldown:
    """Per-user alert cooldown in event time (deterministic on replay).

    Its state, each user's last alert time, lives beside the user's window and goes with it:
    forgotten when the window store evicts the user (so it is bounded by the user cap), and
    rebuilt from the alerts already published when the window is rebuilt after a restart or
    rebalance (stream.runtime.rebuild), so that the alerts after a restart are exactly those
    of an uninterrupted run. The inference thread fires alerts while the consumer thread
    restores and forgets: every access holds the lock.
    """

    cooldown_ms: int = 600_000

    def __post_init__(self) -> None:
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, user_id: str, ts: int) -> bool:
        """True if an alert for ``user_id`` at event time ``ts`` may fire (and record it)."""
        with self._lock:
            last = self._last.get(user_id)
            if last is not None and ts < last + self.cooldown_ms:
                return False
            self._last[user_id] = ts
            return True

    def restore(self, last_alert: Mapping[str, int]) -> None:
        """Take back each user's last alert time (event time), as an uninterrupted run has it.

        An alert only ever fires after its user's last one (``allow``), so the newest of the two is
        the state; restoring what is already known changes nothing.
        """
        with self._lock:
            for user, ts in last_alert.items():
                self._last[user] = max(ts, self._last.get(user, ts))

    def forget(self, users: Iterable[str]) -> None:
        """Drop the users' state (their windows were evicted, or their partition went elsewhere)."""
        with self._lock:
            for u in users:
                self._last.pop(u, None)

    def __len__(self) -> int:
        return len(self._last)

    def users(self) -> list[str]:
        """The users whose last alert time is held (a snapshot)."""
        with self._lock:
            return list(self._last)


def build(*, user_id: str, score: float, threshold: float, severity_steps: list[float], model_version: str,
          event_time: int,
          trigger: dict, trigger_event: str, window: list[dict], explanation: list[dict],
          window_events: int, summary: Summary | None = None) -> dict:
    """An alert record per the published schema.

    ``summary`` (stream.explain) adds what was unusual about the window: ``reasons`` (one
    line), ``findings`` (its sentences) and ``stats`` (their numbers), inside ``window``.
    """
    win: dict = {"events": window_events, "last": window[-MAX_WINDOW_EVENTS_IN_ALERT:]}
    if summary is not None:
        win |= {"reasons": summary.reasons, "findings": summary.findings, "stats": summary.stats}
    return {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id(user_id, model_version, trigger_event),
        "user_id": user_id,
        "score": float(score),
        "threshold": float(threshold),
        "severity": severity(score, severity_steps),
        "model_version": model_version,
        "event_time": int(event_time),
        "detected_at": int(time.time() * 1000),
        "trigger": trigger,
        "window": win,
        "explanation": explanation,
    }
