"""Attacks injected into a real platform's traffic, for the ``bench ecommerce`` benchmark only.

Deliberately independent of everything training uses (it imports nothing from ``training``):
its own kinds, its own parameter ranges, its own timing models, so the benchmark measures
whether a detector generalises to abuse it was never shown.

Kinds (each attacker draws a timing variant: ``machine`` - a fixed period with at most a
few per cent jitter - or ``human`` - log-normal gaps, sigma 0.55-1.0, so a per-user CV of
about 0.6-1.3; real clickstream users have a median gap near 55 s and a median per-user CV
of 0.67, and the human-timed kinds that are not fast by nature - click farms, brushing,
promo abuse, takeovers, replay bots - draw their median gap from 4-60 s):

* ``scraper``      - walks a slice of the catalogue, one item after another, rarely twice
* ``click_farm``   - many clicks on a handful of (unpopular) items of one seller
* ``brushing``     - fake orders: a cover item or two, then the seller's item (cart/buy where
                     the platform has them), cycle after cycle
* ``promo_abuse``  - rings of fresh accounts, each running the same short scripted path on a
                     promoted item (every account of the ring counts as one attacker)
* ``takeover``     - a real test user's account: the user's own events, then (or interleaved
                     with them) the attacker's, under the same user id
* ``replay_bot``   - a real session's item sequence replayed in a loop on a regular clock
                     (machine) or a jittered one (human)
* ``fast_replay``  - a real session replayed at machine speed (machine: a fixed 50-400 ms;
                     human: its own gaps compressed 15-60x, still varied)
* ``burst``        - a few short bursts of 8-30 events seconds apart

Only the platform's own item ids and event types are used: a click-only platform gets
click-only attacks (``Platform.cart``/``buy`` are None there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("scraper", "click_farm", "brushing", "promo_abuse", "takeover", "replay_bot", "fast_replay", "burst")
MAX_GAP_MS = 20 * 60_000  # never a gap that would end a session (the stock gap is 30 min)


@dataclass
class Platform:
    """What the platform has: item ids (with their popularity) and event types."""

    items: list[str]
    item_weights: np.ndarray  # popularity, sums to 1
    view: str  # the browsing event type ("click", "view", "pv", ...)
    cart: str | None = None
    buy: str | None = None
    fav: str | None = None

    @property
    def types(self) -> set[str]:
        return {t for t in (self.view, self.cart, self.buy, self.fav) if t is not None}


@dataclass
class Attacker:
    """Ground truth for one attacking user id (kept apart from the log)."""

    user_id: str
    kind: str
    timing: str  # machine | human
    attack_ts: list[int] = field(default_factory=list)  # the attacker's own events (a takeover's victim's excluded)
    victim: bool = False  # a takeover: the id is a real user's, whose own events stay in the log

    def to_json(self) -> dict:
        return {"user_id": self.user_id, "kind": self.kind, "timing": self.timing, "victim": self.victim,
                "attack_events": len(self.attack_ts), "first_ts": min(self.attack_ts),
                "last_ts": max(self.attack_ts), "attack_ts": self.attack_ts}


class _Gen:
    def __init__(self, platform: Platform, rng: np.random.Generator) -> None:
        self.p = platform
        self.rng = rng
        self.sorted_items = sorted(platform.items)
        order = np.argsort(platform.item_weights)
        self.tail = [platform.items[i] for i in order[: max(1, len(order) // 2)]]  # the less popular half
        self.head = [platform.items[i] for i in order[::-1][: max(1, min(200, len(order) // 10))]]

    # --- timing -----------------------------------------------------------------------------
    def gaps(self, n: int, timing: str, machine_s: tuple[float, float], human_median_s: tuple[float, float],
             sigma: tuple[float, float] = (0.55, 1.0)) -> np.ndarray:
        """n gaps in ms: a fixed period with <= 3 % jitter, or log-normal around a median."""
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        r = self.rng
        if timing == "machine":
            period = r.uniform(*machine_s) * 1000
            jitter = r.uniform(0, 0.03)
            g = period * (1 + r.uniform(-jitter, jitter, n))
        else:
            med = r.uniform(*human_median_s) * 1000
            g = r.lognormal(np.log(med), r.uniform(*sigma), n)
        return np.clip(g, 20, MAX_GAP_MS).astype(np.int64)

    def pick(self, pool: list[str], n: int | None = None):
        if n is None:
            return pool[int(self.rng.integers(len(pool)))]
        return [pool[i] for i in self.rng.integers(0, len(pool), n)]

    def popular(self, n: int | None = None):
        idx = self.rng.choice(len(self.p.items), size=n or 1, p=self.p.item_weights)
        out = [self.p.items[i] for i in idx]
        return out if n else out[0]

    # --- kinds: each returns [(offset_ms, type, item)] ----------------------------------------
    def scraper(self, timing: str) -> list[tuple[int, str, str]]:
        n = int(self.rng.integers(40, 251))
        if self.rng.random() < 0.5:  # a contiguous slice of the catalogue, in id order
            start = int(self.rng.integers(0, max(1, len(self.sorted_items) - n)))
            items = self.sorted_items[start: start + n]
            items += self.pick(self.sorted_items, n - len(items)) if len(items) < n else []
        else:  # uniformly over the catalogue, popularity ignored
            items = self.pick(self.p.items, n)
        return self._seq(items, self.gaps(n - 1, timing, (0.8, 4.0), (3.0, 15.0)))

    def click_farm(self, timing: str) -> list[tuple[int, str, str]]:
        targets = self.pick(self.tail, int(self.rng.integers(1, 5)))
        n = int(self.rng.integers(25, 121))
        items = self.pick(targets, n)
        if timing == "human":  # a little cover browsing
            for i in np.flatnonzero(self.rng.random(n) < 0.1):
                items[i] = self.popular()
        return self._seq(items, self.gaps(n - 1, timing, (4.0, 25.0), (15.0, 60.0)))

    def brushing(self, timing: str) -> list[tuple[int, str, str]]:
        target = self.pick(self.tail)
        p = self.p
        steps: list[tuple[str, str]] = []
        gap_kind: list[int] = []  # 0 within an order, 1 between orders
        for c in range(int(self.rng.integers(4, 13))):
            order = [(p.view, self.popular()) for _ in range(int(self.rng.integers(1, 3)))]
            order += [(p.view, target)] * (1 if p.buy else int(self.rng.integers(2, 4)))
            order += [(t, target) for t in (p.cart, p.buy) if t is not None]
            gap_kind += ([1] if c else []) + [0] * (len(order) - 1)
            steps += order
        within = self.gaps(len(gap_kind), timing, (2.0, 6.0), (8.0, 40.0))
        between = self.gaps(len(gap_kind), timing, (20.0, 90.0), (60.0, 300.0))
        g = np.where(np.array(gap_kind) == 1, between, within)
        return self._steps(steps, g)

    def promo_script(self, timing: str) -> tuple[list[tuple[str, str]], np.ndarray | None]:
        """One ring's script: the path every account runs (and, machine-timed, its gaps)."""
        p = self.p
        promo = self.pick(self.tail)
        landing = self.popular()
        path = [(p.view, landing), (p.view, promo)]
        path += [(p.view, self.pick([promo, self.popular()])) for _ in range(int(self.rng.integers(1, 5)))]
        path += [(p.view, promo)] + [(t, promo) for t in (p.cart, p.buy) if t is not None]
        gaps = self.gaps(len(path) - 1, "machine", (0.8, 5.0), (0, 0)) if timing == "machine" else None
        return path, gaps

    def promo_account(self, script: tuple[list[tuple[str, str]], np.ndarray | None],
                      timing: str) -> list[tuple[int, str, str]]:
        path, fixed = script
        steps, g = [], []
        for rep in range(int(self.rng.integers(1, 4))):
            if rep:
                g.append(self.gaps(1, timing, (15.0, 15.0), (20.0, 90.0))[0])
            steps += path
            g += list(fixed if fixed is not None else self.gaps(len(path) - 1, timing, (0, 0), (4.0, 30.0), (0.8, 1.2)))
        return self._steps(steps, np.array(g, dtype=np.int64))

    def takeover_actions(self, timing: str) -> list[tuple[int, str, str]]:
        p = self.p
        n = int(self.rng.integers(15, 61))
        steps = [(p.view, self.pick(self.head) if self.rng.random() < 0.6 else self.pick(self.p.items))
                 for _ in range(n)]
        if p.buy:  # checkout of what was looked at
            for item in self.pick([s[1] for s in steps], int(self.rng.integers(1, 4))):
                steps += [(t, item) for t in (p.cart, p.buy) if t is not None]
        return self._steps(steps, self.gaps(len(steps) - 1, timing, (0.5, 3.0), (5.0, 40.0)))

    def replay_bot(self, timing: str, source: list[str]) -> list[tuple[int, str, str]]:
        loops = int(self.rng.integers(2, 7))
        items = source * loops
        g = self.gaps(len(items) - 1, timing, (3.0, 20.0), (15.0, 60.0))
        return self._seq(items, g)

    def fast_replay(self, timing: str, source: list[str], source_gaps: np.ndarray) -> list[tuple[int, str, str]]:
        loops = int(self.rng.integers(1, 4))
        items = source * loops
        if timing == "machine":
            g = self.gaps(len(items) - 1, "machine", (0.05, 0.4), (0, 0))
        else:
            own = np.tile(np.append(source_gaps, np.median(source_gaps)), loops)[: len(items) - 1]
            g = own / self.rng.uniform(15, 60) * self.rng.lognormal(0, 0.7, len(own))
            g = np.clip(g, 20, MAX_GAP_MS).astype(np.int64)
        return self._seq(items, g)

    def burst(self, timing: str) -> list[tuple[int, str, str]]:
        sizes = self.rng.integers(8, 31, int(self.rng.integers(1, 5)))
        pool = self.pick(self.p.items, int(self.rng.integers(1, 4))) if self.rng.random() < 0.5 else self.p.items
        inner = iter(self.gaps(int(sizes.sum()), timing, (0.08, 0.4), (0.4, 1.5), (0.5, 0.9)))  # one clock per bot
        pauses = iter(self.gaps(len(sizes), timing, (120.0, 900.0), (120.0, 900.0)))
        g = [next(pauses) if i and j == 0 else next(inner) for i, n in enumerate(sizes) for j in range(n)][1:]
        return self._seq(self.pick(pool, int(sizes.sum())), np.array(g, dtype=np.int64))

    def _seq(self, items: list[str], gaps: np.ndarray) -> list[tuple[int, str, str]]:
        return self._steps([(self.p.view, i) for i in items], gaps)

    @staticmethod
    def _steps(steps: list[tuple[str, str]], gaps: np.ndarray) -> list[tuple[int, str, str]]:
        offs = np.concatenate([[0], np.cumsum(np.asarray(gaps, dtype=np.int64)[: len(steps) - 1])])
        return [(int(o), ty, it) for o, (ty, it) in zip(offs, steps, strict=True)]


def _fresh_ids(existing: set[str], n: int, rng: np.random.Generator) -> list[str]:
    """Ids that look like the platform's: unused integers in its id range when its ids are numbers."""
    nums = [int(u) for u in existing if u.isdigit()]
    out: list[str] = []
    taken = set(existing)
    if nums and len(nums) == len(existing):
        lo, hi = min(nums), max(max(nums) * 11 // 10, max(nums) + 10 * n + 10)
        while len(out) < n:
            u = str(int(rng.integers(lo, hi + 1)))
            if u not in taken:
                taken.add(u)
                out.append(u)
        return out
    while len(out) < n:
        u = f"u{int(rng.integers(0, 10**9)):09d}"
        if u not in taken:
            taken.add(u)
            out.append(u)
    return out


def generate(normal: dict[str, list[tuple[int, str, str]]], platform: Platform, start_ms: int, end_ms: int, *,
             per_kind: int | dict[str, int] = 30, seed: int = 0, kinds: tuple[str, ...] = KINDS,
             sources: dict[str, list[tuple[int, str, str]]] | None = None,
             ) -> tuple[list[dict], list[Attacker]]:
    """Attack events to merge into a test log, and who the attackers are.

    ``normal``: the test period's real users, ``user -> [(ts_ms, type, item)]`` in time order
    (takeover victims are drawn from them). ``sources``: real sessions to replay (default:
    ``normal``; pass training-period users so a replay does not duplicate a test user).
    Attacks start at random times in [start_ms, end_ms - their duration]. Returns the attack
    events as ``{"user_id", "ts", "type", "item_id"}`` (unsorted) and one :class:`Attacker` per id.
    """
    rng = np.random.default_rng(seed)
    g = _Gen(platform, rng)
    counts = per_kind if isinstance(per_kind, dict) else dict.fromkeys(kinds, per_kind)
    counts = {k: int(counts.get(k, 0)) for k in kinds}
    src = [evs for evs in (sources or normal).values() if len(evs) >= 4]
    victims_pool = sorted(u for u, evs in normal.items() if len(evs) >= 3)
    victims = [victims_pool[i] for i in rng.permutation(len(victims_pool))[: counts.get("takeover", 0)]]
    n_fresh = sum(n for k, n in counts.items() if k != "takeover")
    fresh = iter(_fresh_ids(set(normal) | set(sources or {}), n_fresh, rng))
    events: list[dict] = []
    attackers: list[Attacker] = []

    def place(user: str, kind: str, timing: str, seq: list[tuple[int, str, str]], at: int | None = None) -> None:
        dur = seq[-1][0]
        t0 = at if at is not None else int(rng.integers(start_ms, max(start_ms + 1, end_ms - dur)))
        a = Attacker(user, kind, timing, [t0 + o for o, _, _ in seq], victim=kind == "takeover")
        events.extend({"user_id": user, "ts": t0 + o, "type": ty, "item_id": it} for o, ty, it in seq)
        attackers.append(a)

    def timing() -> str:
        return "machine" if rng.random() < 0.5 else "human"

    for kind in kinds:
        n = counts[kind]
        if kind == "promo_abuse":
            left = n
            while left > 0:
                ring = min(left, int(rng.integers(6, 16)))
                tm = timing()
                script = g.promo_script(tm)
                t0 = int(rng.integers(start_ms, max(start_ms + 1, end_ms - 3_600_000)))
                for _ in range(ring):
                    t0 += int(g.gaps(1, tm, (60.0, 60.0), (20.0, 300.0))[0])
                    place(next(fresh), kind, tm, g.promo_account(script, tm), at=min(t0, end_ms - 600_000))
                left -= ring
        elif kind == "takeover":
            for user in victims:
                tm = timing()
                own = normal[user]
                seq = g.takeover_actions(tm)
                if rng.random() < 0.5:  # follows the user's session, minutes after its last event
                    at = own[-1][0] + int(rng.uniform(60_000, 25 * 60_000))
                else:  # interleaved: starts inside the user's session
                    at = int(rng.integers(own[0][0], own[-1][0] + 1))
                place(user, kind, tm, seq, at=at)
        else:
            for _ in range(n):
                tm = timing()
                if kind in ("replay_bot", "fast_replay"):
                    s = src[int(rng.integers(len(src)))]
                    items = [it for _, _, it in s]
                    seq = (g.replay_bot(tm, items) if kind == "replay_bot"
                           else g.fast_replay(tm, items, np.maximum(np.diff([t for t, _, _ in s]), 1)))
                else:
                    seq = getattr(g, kind)(tm)
                place(next(fresh), kind, tm, seq)
    return events, attackers


def gap_stats(seqs: list[list[int]]) -> dict:
    """Gap distribution of users' event times (ms): median gap, quartiles and median per-user CV."""
    gaps = [np.diff(np.sort(np.asarray(t, dtype=np.int64))) for t in seqs if len(t) >= 3]
    if not gaps:
        return {"users": 0}
    allg = np.concatenate(gaps) / 1000
    cv = [g.std() / g.mean() for g in gaps if g.mean() > 0]
    return {"users": len(gaps), "gaps": int(allg.size), "gap_s_p10": float(np.percentile(allg, 10)),
            "gap_s_median": float(np.median(allg)), "gap_s_p90": float(np.percentile(allg, 90)),
            "sub_second_share": float((allg < 1).mean()), "cv_median": float(np.median(cv)),
            "events_per_user_median": float(np.median([len(g) + 1 for g in gaps]))}
