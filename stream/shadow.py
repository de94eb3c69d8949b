"""`run --shadow DIR`: the users the serving and the shadow model disagree on, kept for `compare --shadow`.

The detector already scores every window with the shadow model and counts agreements
(stream.detector). :class:`ShadowRecorder` - the same detector - also writes, the first time
each model's score reaches its threshold for a user, one line to ``DIR/shadow/crossings.jsonl``
(``{"model": "serving"|"shadow", "version", "user_id", "event_time", "score", "severity"}``).
Users only one model crosses for are the disagreements; `seqsentry compare DIR --shadow`
reads them as the same user-level diff a recorded log gives, so a candidate is judged on
live traffic before promotion. One line per user and model: the file grows with alerted
users, not with traffic. A directory that cannot be written only stops the recording (one
warning); scoring and alerting go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from stream.alerts import severity
from stream.compare import crossings_path
from stream.detector import Detector, Pending
from stream.encoding import Encoded

log = logging.getLogger(__name__)
MAX_RECORDED = 1_000_000  # (user, model) pairs remembered; past it the recording stops with a warning


@dataclass
class ShadowRecorder(Detector):
    """A :class:`Detector` that records each model's first threshold crossing per user."""

    shadow_out: Path | None = None  # default: the shadow artifact's shadow/crossings.jsonl

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shadow_out is None and self.shadow is not None:
            self.shadow_out = crossings_path(self.shadow.artifact.path)
        self._seen: set[tuple[str, str]] = set()
        self._shadow_scores: np.ndarray | None = None

    def _score_bucketed(self, scorer, enc: Encoded, keep: np.ndarray) -> np.ndarray:  # noqa: ANN001
        scores = super()._score_bucketed(scorer, enc, keep)
        if scorer is self.shadow:  # the shadow's scores of this batch, for _shadow below
            self._shadow_scores = scores
        return scores

    def _shadow(self, pendings: list[Pending], keep: np.ndarray, scores: np.ndarray) -> None:
        super()._shadow(pendings, keep, scores)
        shadow_scores, self._shadow_scores = self._shadow_scores, None
        if shadow_scores is None or self.shadow_out is None:
            return
        try:
            self._record(pendings, keep, scores, shadow_scores)
        except OSError as exc:
            log.warning("shadow: cannot write %s (%s); disagreements are no longer recorded", self.shadow_out, exc)
            self.shadow_out = None

    def _record(self, pendings: list[Pending], keep: np.ndarray, scores: np.ndarray, shadow_scores: np.ndarray) -> None:
        users = [u for p in pendings for u in p.windows.user_id]
        times = np.concatenate([p.event_time for p in pendings]).tolist()
        lines = []
        assert self.shadow is not None
        for role, sc, art in (("serving", scores, self.scorer.artifact), ("shadow", shadow_scores, self.shadow.artifact)):
            for i in np.flatnonzero(keep & (sc >= np.float32(art.meta.threshold))).tolist():
                if (users[i], role) in self._seen:
                    continue
                if len(self._seen) >= MAX_RECORDED:
                    raise OSError(f"more than {MAX_RECORDED:,} users recorded")
                self._seen.add((users[i], role))
                lines.append(orjson.dumps({"model": role, "version": art.version, "user_id": users[i],
                                           "event_time": int(times[i]), "score": float(sc[i]),
                                           "severity": severity(float(sc[i]), art.meta.severity)}))
        if lines:
            assert self.shadow_out is not None
            self.shadow_out.parent.mkdir(parents=True, exist_ok=True)
            with open(self.shadow_out, "ab") as f:
                f.write(b"\n".join(lines) + b"\n")
