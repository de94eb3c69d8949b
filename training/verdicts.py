"""What a model trained with analysts' verdicts (`train --labels` from `seqsentry feedback`) makes of them.

The labels file's label-1 users are confirmed attackers (positives, with their kind as the
attack), its label-0 users dismissed alerts: normal users an earlier model alerted, kept as
hard negatives: label 0 like every unlabelled user of the log, but trained on with all their
windows where other normal users' are sampled (:func:`with_hard_negatives`). After training,
both groups are scored: how many of each the new model alerts among the held-out
(calibration and test) users, where it did not train on them, and anywhere in the log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from training.dataset import Split, WindowSet

GROUPS = (("confirmed_attackers", 1), ("dismissed_users", 0))


def summarise(score: Callable[[WindowSet], np.ndarray], ws: WindowSet, sp: Split, threshold: float,
              verdicts: Mapping[str, int]) -> dict:
    """Per group: users in the labels, in the log, held out, and alerted (held out / anywhere).

    ``score`` gives a subset's sustained scores as the detector computes them; a user is
    alerted when any of its windows reaches ``threshold`` (compared as float32, as served).
    """
    held = np.union1d(sp.calibration(ws), sp.test)
    index = {u: i for i, u in enumerate(ws.users)}
    thr = np.float32(threshold)
    out = {}
    for name, label in GROUPS:
        wanted = [u for u, lab in verdicts.items() if lab == label]
        ids = np.array([index[u] for u in wanted if u in index], dtype=np.int64)
        rows = np.flatnonzero(np.isin(ws.user, ids))
        s = np.asarray(score(ws.subset(rows)), dtype=np.float32) if len(rows) else np.empty(0, np.float32)
        users, hit, in_held = ws.user[rows], s >= thr, np.isin(rows, held)
        out[name] = {"in_labels": len(wanted), "in_log": len(ids), "held_out": len(np.unique(users[in_held])),
                     "alerted_held_out": len(np.unique(users[in_held & hit])),
                     "alerted_anywhere": len(np.unique(users[hit]))}
    return out


def with_hard_negatives(sample: WindowSet, train: WindowSet, verdicts: Mapping[str, int]) -> WindowSet:
    """``sample`` (training's capped sample of ``train``) plus every training window of the dismissed
    users (label 0 in the labels): the normal users an earlier model alerted weigh more than a
    random normal user, whose windows are only sampled (a window already sampled counts twice)."""
    dismissed = [i for i, u in enumerate(train.users) if verdicts.get(u) == 0]
    hard = train.subset(np.flatnonzero(np.isin(train.user, dismissed)))
    if not len(hard):
        return sample
    return sample.joined(hard)


def line(info: dict) -> str:
    """`train`'s one line about the verdicts."""
    parts = []
    for name, _ in GROUPS:
        g = info[name]
        parts.append(f"{g['in_labels']:,} {name.replace('_', ' ')} ({g['in_log']:,} in the log): alerts "
                     f"{g['alerted_held_out']:,}/{g['held_out']:,} held out (calibration/test), "
                     f"{g['alerted_anywhere']:,}/{g['in_log']:,} anywhere")
    return "labels: " + "; ".join(parts)
