"""The training-side attack library: abuse injected into a platform's own recorded traffic.

A fraud team without labels still has its platform's normal traffic. ``seqsentry train``
turns that into a supervised problem: the log's own users are the normal class, and
attackers made *from the same log* - its event types, its items (by popularity), its
time range, its real sessions - are the positive class. The classifier then learns what
this platform's users do and how abuse departs from it, not what one generator's users
look like.

Every kind is a family, not a template: lengths, rates, timing style, item choice and
placement are drawn per attacker, so the classifier sees the axes abuse varies on rather
than a handful of fixed shapes. Kinds:

* ``scrape`` - many distinct items in catalogue or popularity order.
* ``loop`` - a few target items over and over (click farms, promoted items), half the time
  hidden among cover items (20-70 % of the events on the targets).
* ``replay`` - one to three real sessions copied, repeated and re-timed (bots replaying traffic).
* ``burst`` - a short run of events far faster than people click.
* ``script`` - one short scripted path over the platform's event types on one item,
  repeated (fake orders, promo abuse; on a click-only platform, repeated visits).
* ``takeover`` - a real user's history, then one of the runs above under their id.

Timing is drawn per attacker: ``machine`` (a constant gap with <= 5 % jitter),
``jittered`` (a log-normal spread of 5-25 %) or ``human`` (log-normal, sigma 0.5-1.3, so
gaps look like people's), with typical gaps from 0.2 s to 90 s - or, for four runs in ten,
one of the platform's own users' gaps, so that abuse paced like its people is in the positive
class too and speed alone cannot separate the classes; three in ten of the runs that are not
fast take their gaps from the platform's users outright, one real user's gap sequence after another, so
that timing shaped like people's (bursts, then minutes of reading) is no proof of a person
either; three runs in ten come in spells a few minutes apart. Injected events carry
``label=1`` and ``attack="injected:<kind>"``; a takeover victim's own events stay normal.

The benchmark (bench/ecommerce.py) draws its attacks from a separate generator with its
own kinds and ranges, so what it measures is generalisation, not recall of this library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.events import Event

KINDS: tuple[str, ...] = ("scrape", "loop", "replay", "burst", "script", "takeover")
TIMINGS: tuple[str, ...] = ("machine", "jittered", "human")
PREFIX = "injected:"  # attack names of injected events; real labelled attacks keep their own
# Fine-tuning samples a capped number of windows however many attackers there are, so more
# attackers buy variety (more draws of each kind's lengths, rates, timing and items), not steps.
# 480 at 10 % of the users: 195/240 of the ecommerce benchmark's attackers; 1,500 at 25 %: 207/240.
MIN_ATTACKERS, MAX_ATTACKERS, ATTACKER_SHARE = 60, 1500, 0.25
#: Share of (not burst) attackers whose typical gap is one of the platform's own users' gaps: abuse
#: paced like the platform's people, so that the classifier has to find it by what the run does
#: (its length, its narrowness, its repetition) and cannot lean on speed alone.
PLATFORM_PACED = 0.4
#: Share of (not fast) attackers whose gaps are the platform's own users' gaps, copied one after
#: another, not a timing style around a typical gap. People's timing has a shape no log-normal
#: around one pace has - bursts of clicks, then minutes of reading - and without it in the positive
#: class the classifier learns that gaps shaped like that mean a person: 20-40 clicks on one
#: item in an hour, paced so, were scored normal. With it, only what the run does can separate it.
BORROWED_TIMING = 0.3
SESSION_PACE_MAX_MS = 20 * 60_000  # gaps longer than this are between visits, not a pace
#: Below this many real users the platform's pace is a few people's habits, and attacks paced
#: on them teach the classifier those people: Taobao's 43 users, paced on, had 10 of their 42
#: later selves alerted (0 of 42 with the library's own pace); such logs keep the library's.
PACE_MIN_USERS = 200


@dataclass(frozen=True)
class Platform:
    """What attacks borrow from the real log: its types, items, sessions and time range."""

    types: list[str]
    type_p: np.ndarray
    items: list[str]
    item_p: np.ndarray
    sessions: list[list[Event]]  # every real user's events, oldest first
    t0: int
    t1: int
    pace_ms: np.ndarray  # the real users' gaps between consecutive events of a session (ms)
    pace_runs: list[np.ndarray]  # the same gaps, each real user's in order (users with at least one)
    # the users an account takeover may hit: never a labelled attacker, whose history, copied as
    # the victim's normal part, would teach the classifier that abuse is normal
    victims: list[list[Event]]

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> Platform:
        """Summarise a time-ordered list of real events."""
        if not events:
            raise ValueError("no events to build attacks from")
        types, tc = np.unique([e.type for e in events], return_counts=True)
        item_ids = [e.item_id for e in events if e.item_id is not None]
        items, ic = np.unique(item_ids, return_counts=True) if item_ids else (np.array([], dtype=object), np.array([]))
        by_user: dict[str, list[Event]] = {}
        for e in events:
            by_user.setdefault(str(e.user_id), []).append(e)
        diffs = [np.diff(np.fromiter((e.ts for e in s), np.int64, len(s))) for s in by_user.values() if len(s) > 1]
        runs = [d[(d > 0) & (d < SESSION_PACE_MAX_MS)] for d in diffs] if len(by_user) >= PACE_MIN_USERS else []
        runs = [r for r in runs if len(r)]
        pace = np.concatenate(runs) if runs else np.empty(0, np.int64)
        sessions = list(by_user.values())
        victims = [s for s in sessions if all(e.label != 1 for e in s)] or sessions
        return cls([str(t) for t in types], tc / tc.sum(), [str(i) for i in items],
                   ic / ic.sum() if len(ic) else ic, sessions, int(events[0].ts), int(events[-1].ts), pace, runs,
                   victims)


def n_attackers(n_users: int) -> int:
    """How many attackers to inject for a log of ``n_users`` real users."""
    return int(np.clip(round(ATTACKER_SHARE * n_users), MIN_ATTACKERS, MAX_ATTACKERS))


def gaps(rng: np.random.Generator, k: int, timing: str, typical_ms: float) -> np.ndarray:
    """``k`` gaps (ms) in a timing style around a typical gap."""
    if timing == "machine":
        g = typical_ms * (1 + rng.uniform(-1, 1, k) * rng.uniform(0, 0.05))
    elif timing == "jittered":
        g = typical_ms * rng.lognormal(0, rng.uniform(0.05, 0.25), k)
    else:
        g = typical_ms * rng.lognormal(0, rng.uniform(0.5, 1.3), k)
    return np.maximum(g, 20).astype(np.int64)


def borrowed_gaps(rng: np.random.Generator, runs: Sequence[np.ndarray], k: int) -> np.ndarray:
    """``k`` gaps (ms): real users' gap sequences, drawn at random and laid end to end."""
    out: list[np.ndarray] = []
    have = 0
    while have < k:
        r = runs[int(rng.integers(len(runs)))]
        out.append(r)
        have += len(r)
    return np.concatenate(out)[:k].astype(np.int64)


def _typical_ms(rng: np.random.Generator, fast: bool = False, pace_ms: np.ndarray | None = None) -> tuple[float, bool]:
    """A typical gap (ms), and whether it is one of the platform's own users' gaps."""
    if not fast and pace_ms is not None and len(pace_ms) and rng.random() < PLATFORM_PACED:
        return float(max(pace_ms[int(rng.integers(len(pace_ms)))], 200)), True
    lo, hi = (50, 2_000) if fast else (200, 90_000)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), False


def _items(p: Platform, rng: np.random.Generator, k: int, *, distinct: bool = False) -> list[str | None]:
    if not p.items:
        return [None] * k
    if distinct:
        if rng.random() < 0.5:  # catalogue order, as a crawler walks it
            start = int(rng.integers(0, max(1, len(p.items) - k)))
            return [p.items[(start + i) % len(p.items)] for i in range(k)]
        idx = rng.choice(len(p.items), min(k, len(p.items)), replace=False, p=p.item_p)
        return [p.items[i] for i in np.resize(idx, k)]
    return [p.items[i] for i in rng.choice(len(p.items), k, p=p.item_p)]


def _types(p: Platform, rng: np.random.Generator, k: int) -> list[str]:
    if rng.random() < 0.6:  # one type throughout (views only, clicks only)
        return [p.types[int(np.argmax(p.type_p))]] * k
    return [p.types[i] for i in rng.choice(len(p.types), k, p=p.type_p)]


def run(p: Platform, rng: np.random.Generator, kind: str, paced: bool = False) -> tuple[list[str], list[str | None]]:
    """Types and items of one attack run of ``kind`` (not ``takeover``); ``paced``: the run keeps
    the platform's own pace, so a replay must repeat what it copies."""
    if kind == "scrape":
        k = int(rng.integers(8, 200))
        return _types(p, rng, k), _items(p, rng, k, distinct=True)
    if kind == "loop":
        k = int(rng.integers(6, 150))
        targets = _items(p, rng, int(rng.integers(1, 5)))
        order = np.arange(k) % len(targets) if rng.random() < 0.5 else rng.integers(0, len(targets), k)
        items = [targets[i] for i in order]
        if rng.random() < 0.5:  # the targets hidden among cover items (a promoted item, fake orders)
            cover = _items(p, rng, k)
            share = rng.uniform(0.2, 0.7)
            items = [t if rng.random() < share else c for t, c in zip(items, cover, strict=True)]
        return _types(p, rng, k), items
    if kind == "replay":
        pool = [s for s in p.sessions if len(s) >= 2] or p.sessions
        s = [e for _ in range(int(rng.integers(1, 4))) for e in pool[int(rng.integers(len(pool)))]][:60]
        # real sessions played once at their platform's pace are real sessions, not abuse: labelled
        # positive, they taught the classifier that normal sessions attack (HDFS, whose sessions all
        # tick at 1 s: 24 % of normal test sessions alerted, 0.7 % without the platform's pace)
        reps = int(rng.integers(2 if paced else 1, 7))
        return [e.type for e in s] * reps, [e.item_id for e in s] * reps
    if kind == "burst":
        k = int(rng.integers(4, 16))
        return _types(p, rng, k), _items(p, rng, k, distinct=rng.random() < 0.5)
    if kind == "script":
        path_len = int(rng.integers(2, 7))
        rare = np.argsort(p.type_p)  # scripted paths lean on the rarer types (cart, buy, coupon ...)
        path = [p.types[rare[int(rng.integers(0, max(1, len(rare) // 2 + 1)))]] if rng.random() < 0.5
                else p.types[int(np.argmax(p.type_p))] for _ in range(path_len)]
        reps = int(rng.integers(2, 9))
        item = _items(p, rng, 1)[0]
        return path * reps, [item] * (path_len * reps)
    raise ValueError(f"unknown attack kind {kind!r}")


def _place(rng: np.random.Generator, p: Platform, duration: int) -> int:
    return int(rng.integers(p.t0, max(p.t0 + 1, p.t1 - duration)))


def attacker(p: Platform, rng: np.random.Generator, kind: str, uid: str) -> list[Event]:
    """One attacker's events (oldest first)."""
    inner = KINDS[int(rng.integers(0, len(KINDS) - 1))] if kind == "takeover" else kind
    timing = TIMINGS[int(rng.integers(len(TIMINGS)))]
    fast = inner == "burst" or rng.random() < 0.2
    borrow = not fast and bool(p.pace_runs) and rng.random() < BORROWED_TIMING
    typical, paced = _typical_ms(rng, fast, p.pace_ms)
    types, items = run(p, rng, inner, paced or borrow)
    g = borrowed_gaps(rng, p.pace_runs, len(types)) if borrow else gaps(rng, len(types), timing, typical)
    if rng.random() < 0.3:  # the run comes in spells, minutes apart (still inside one session)
        pauses = rng.random(len(g)) < rng.uniform(0.02, 0.15)
        g[pauses] = rng.integers(60_000, 20 * 60_000, int(pauses.sum()))
    g[0] = 0
    offsets = np.cumsum(g)
    name = PREFIX + kind
    if kind == "takeover":
        victim = p.victims[int(rng.integers(len(p.victims)))]
        cut = int(rng.integers(1, len(victim) + 1))  # the attacker arrives after the owner's cut-th event
        start = int(victim[cut - 1].ts) + int(gaps(rng, 1, "human", 20_000)[0])
        own = [Event(uid, int(e.ts), e.type, item_id=e.item_id, price=e.price, label=0) for e in victim]
        run_ev = [Event(uid, start + int(o), t, item_id=i, label=1, attack=name)
                  for o, t, i in zip(offsets.tolist(), types, items, strict=True)]
        return sorted(own + run_ev, key=lambda e: e.ts)
    start = _place(rng, p, int(offsets[-1]))
    return [Event(uid, start + int(o), t, item_id=i, label=1, attack=name)
            for o, t, i in zip(offsets.tolist(), types, items, strict=True)]


def inject(events: Sequence[Event], seed: int = 0, count: int | None = None) -> list[Event]:
    """Attack events made from a time-ordered list of real ``events`` (``count`` attackers,
    default :func:`n_attackers`; kinds in turn). Attackers get fresh ids ``inj<n>``; a
    takeover's events reuse its victim's history under that fresh id, so real users' own
    windows are untouched."""
    p = Platform.from_events(events)
    rng = np.random.default_rng(seed)
    count = n_attackers(len(p.sessions)) if count is None else count
    out: list[Event] = []
    for n in range(count):
        out += attacker(p, rng, KINDS[n % len(KINDS)], f"inj{n:05d}")
    return out
