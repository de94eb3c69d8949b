"""Held-out attack generator, written independently of ``bench/attackgen.py`` to test generalisation.

It has the same interface as ``bench/attackgen.py`` (``KINDS``, ``MAX_GAP_MS``, ``Platform``, ``Attacker``,
``generate``, ``gap_stats``) and can be imported in its place. Attackers use only the platform's own item
ids and event types; on a click-only platform (``cart``/``buy`` None) every kind degrades to views. Fresh
attacker ids copy the shape of the real ids (digits of similar length, or the same prefix and character
classes). No gap inside one attacker's run reaches ``MAX_GAP_MS`` (20 min), so each run stays one session.

Timing styles (drawn per attacker; each kind has its own odds and ranges, listed below):

* machine / regular: a fixed period P with 0.3-5 % Gaussian jitter; 40 % of the periods are whole seconds
  (cron-like ``sleep(5)``).
* machine / sleep: a scripted random sleep, gaps ~ U(a, b) with b/a in 1.5-4 plus ~50 ms network latency
  (gap CV 0.1-0.35).
* machine / fast: as fast as the network allows, base 80-1000 ms plus exponential latency.
* human / lognormal: log-normal gaps, median m and sigma 0.5-1.05 (gap CV ~0.55-1.5), 2-8 % of the gaps
  stretched x3-10 (distraction), floored at 1 s.
* human / copied: the in-session gap sequence of a real user in ``sources`` (one whose median gap is >= 3 s),
  taken cyclically from a random offset with +-15 % jitter.

Kinds:

* ``scraper``: catalogue / price scraping, views only. 70 % long runs (50-300 events, log-uniform), 30 %
  15-50. Item walk: sequential through the id-sorted catalogue (stride 1-5, 35 %), uniform over the catalogue
  ignoring popularity (30 %), price monitor cycling a fixed list of 5-30 items (20 %), best-seller crawl
  down the popularity ranking (15 %). Machine 70 % (period 0.5-15 s), human 30 % (median 10-90 s:
  low-and-slow).
* ``click_farm``: fake engagement for one seller's handful (2-8 obscure items, Dirichlet-weighted so one or
  two get most of it) by groups of 3-12 accounts started within 30 min-12 h of each other. Runs of 8-15
  (25 %), 15-60 (55 %) or 60-150 (20 %) events; 5-35 % decoy views of popular items, 0-30 % of targets
  favourited, 0-20 % carted (no purchase), 0-40 % immediate re-views. Machine 50 % (1-30 s), human 50 %
  (5-60 s).
* ``brushing``: fake orders on a seller's 1-4 obscure items by groups of 2-8 accounts spread over 1-48 h.
  Each account places 1-4 orders (more until it has >= 8 events): 0-3 decoy views of popular items
  ("search results"), 1-3 views of the target, a favourite (30 %), cart, buy; 8-40 events. Machine 35 %
  (1-20 s), human 65 % (8-90 s).
* ``promo_abuse``: multi-accounting on a promotion. Groups of 4-15 fresh accounts share one promoted item
  (drawn from the top 10 % by popularity) and 3-10 cheap add-on items (obscure); the group arrives as a wave
  within 10 min-3 h of the promotion's start (50 %) or serially, one account after the other with 1-10 min
  between them (50 %). Each account: lands on the promoted item (60 %) or on 1-3 popular items first, browses
  the promo item / add-ons / popular items, carts the promo item and 0-2 add-ons, buys them; 8-20 events.
  Machine 50 % (0.7-15 s), human 50 % (5-60 s).
* ``takeover``: a real user of ``normal`` (with >= 2 events) is taken over; the victim's own events stay.
  The attack either starts >= 35 min away from any of the victim's events (credential stuffing, 70 %) or
  1-15 min after one of them, ending >= 5 min before the next (session hijack, 30 %). Content avoids the
  victim's items: cash-out (3-10 views of popular items, 1-4 carted and bought, 50 % where cart and buy
  exist), drain (one popular item viewed, carted, bought 3-8 times, 20 %), else browse (8-30
  views). Machine 50 % (0.5-10 s), human 50 % (4-60 s).
* ``replay_clock``: a real session from ``sources`` (>= 3 events) replayed in a loop under a fresh id.
  Machine 75 %: enough loops for >= 8 events plus 0-5 more (<= 300 events) on a regular clock, period 2-60 s
  with 0.3-3 % jitter (40 % whole seconds). Human 25 % (record-and-replay keeping the recorded timing): 2-6
  loops with the session's own gaps (+-5 %) and 2 s-5 min between loops.
* ``replay_fast``: consecutive real sessions of one ``sources`` user (topped up from other users when short)
  replayed at machine speed: 8-15 (30 %), 15-60 (50 %) or 60-300 (20 %) events; gaps 80-1000 ms base plus
  latency (60 %) or the recorded gaps (each capped at 10 min) compressed 20-200x, floored at 50 ms (40 %).
  Always machine.
* ``burst``: short bursts of 8-15 events, one (60 %) or 2-5 separated by 1-15 min pauses. Content: sniping a
  hot item (2-6 refreshing views, cart, buy, repeated; where cart exists), a sweep of 8-15 different items
  (stock / price check), or hammering one item. Machine 60 % (30-600 ms base plus latency), human 40 %
  (frantic clicking, log-normal median 1.5-5 s, sigma 0.3-0.6, floor 400 ms).

Placement: attackers not in a campaign start uniformly in ``[start_ms, end_ms - duration]``; campaigns
(click farm, brushing, promo) pick an anchor uniformly and spread their accounts after it. A run longer than
the period is cut to fit.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The shared interface only (what a platform offers, who attacked, how gaps are summarised):
# the attacks below are this module's own.
from bench.attackgen import MAX_GAP_MS, Attacker, Platform, gap_stats  # noqa: F401 (re-exported)

KINDS: tuple[str, ...] = (
    "scraper", "click_farm", "brushing", "promo_abuse", "takeover", "replay_clock", "replay_fast", "burst",
)

SESSION_GAP_MS = 30 * 60_000
_GAP_CAP_MS = MAX_GAP_MS - 1_000
_MIN = 60_000
_N_SOURCE_USERS = 4_000  # how many source users are looked at for sessions and gap donors

Event = tuple[int, str, str]  # (ts_ms, type, item)
Step = tuple[str, str]  # (type, item)


@dataclass
class _Run:
    """One attacker's run before it gets an id and a clock position."""

    kind: str
    timing: str
    steps: list[Step]
    gaps: np.ndarray  # len(steps) - 1 gaps in ms
    start: int | None = None  # None: placed uniformly at random
    user_id: str | None = None  # a victim's id for takeovers


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _sessions(events: list[Event]) -> list[list[Event]]:
    out: list[list[Event]] = []
    for e in events:
        if out and e[0] - out[-1][-1][0] < SESSION_GAP_MS:
            out[-1].append(e)
        else:
            out.append([e])
    return out


class _Ids:
    """Fresh ids shaped like the platform's own: same common prefix, same character classes and length."""

    def __init__(self, rng: np.random.Generator, normal: dict, sources: dict) -> None:
        self.rng = rng
        self.taken: set[str] = set(normal) | set(sources)
        pool = list(normal) or list(sources)
        if pool:
            idx = rng.choice(len(pool), size=min(len(pool), 1_000), replace=False)
            self.sample = [str(pool[i]) for i in np.sort(idx)]
        else:
            self.sample = ["100000"]
        prefix = self.sample[0]
        for s in self.sample[1:]:
            while not s.startswith(prefix):
                prefix = prefix[:-1]
        # keep only the alphabetic / punctuation part of the common prefix ("user_", "u"), not shared digits
        while prefix and prefix[-1].isdigit():
            prefix = prefix[:-1]
        self.prefix = prefix
        letters = "".join(c for s in self.sample for c in s[len(prefix):] if c.isalpha())
        self.hex = bool(letters) and all(c in "abcdefABCDEF" for c in letters)
        self.lead_zero = any(s[len(prefix):].startswith("0") for s in self.sample if len(s) > len(prefix) + 1)

    def _char(self, c: str, first: bool) -> str:
        rng = self.rng
        if c.isdigit():
            pool = string.digits if (self.lead_zero or not first) else string.digits[1:]
        elif c.islower():
            pool = "abcdef" if self.hex else string.ascii_lowercase
        elif c.isupper():
            pool = "ABCDEF" if self.hex else string.ascii_uppercase
        else:
            return c
        return pool[int(rng.integers(len(pool)))]

    def new(self) -> str:
        extra = 0
        for attempt in range(10_000):
            if attempt and attempt % 500 == 0:
                extra += 1  # a small id space is full: make them longer
            tmpl = self.sample[int(self.rng.integers(len(self.sample)))]
            body = tmpl[len(self.prefix):] or "0"
            body += body[-1] * extra
            cand = self.prefix + "".join(self._char(c, i == 0) for i, c in enumerate(body))
            if cand not in self.taken:
                self.taken.add(cand)
                return cand
        raise RuntimeError("could not make a fresh attacker id")


class _Ctx:
    def __init__(self, normal: dict[str, list[Event]], platform: Platform, start_ms: int, end_ms: int,
                 sources: dict[str, list[Event]], rng: np.random.Generator) -> None:
        self.normal, self.p, self.rng = normal, platform, rng
        self.start, self.end = int(start_ms), int(end_ms)
        self.span = max(0, self.end - self.start)
        self.items = list(platform.items)
        w = np.asarray(platform.item_weights, dtype=np.float64)
        self.w = w / w.sum() if w.sum() > 0 else np.full(len(self.items), 1 / len(self.items))
        self.cdf = np.cumsum(self.w)
        order = np.argsort(-self.w, kind="stable")  # most popular first
        n = len(self.items)
        self.top10 = order[: max(1, n // 10)]
        self.obscure = order[n // 2:] if n >= 4 else order
        self._sorted_items: list[str] | None = None
        self.ids = _Ids(rng, normal, sources)
        self.types = {t for t in (platform.view, platform.cart, platform.buy, platform.fav) if t}
        self._load_sources(sources)

    # ---- sources: real sessions to replay, real gap sequences to copy
    def _load_sources(self, sources: dict[str, list[Event]]) -> None:
        keys = list(sources)
        item_set = set(self.items)
        self.user_sessions: list[list[list[Event]]] = []  # per user, its sessions
        self.session_gaps: list[tuple[list[Step], np.ndarray]] = []  # one real session with its gaps
        self.donors: list[np.ndarray] = []
        if not keys:
            return
        idx = np.sort(self.rng.choice(len(keys), size=min(len(keys), _N_SOURCE_USERS), replace=False))
        for i in idx:
            evs = [e for e in sources[keys[i]] if e[1] in self.types and e[2] in item_set]
            sess = _sessions(evs)
            if sess:
                self.user_sessions.append(sess)
            in_gaps: list[np.ndarray] = []
            for s in sess:
                g = np.diff(np.array([e[0] for e in s], dtype=np.int64))
                if len(s) >= 3:
                    self.session_gaps.append(([(e[1], e[2]) for e in s], g))
                in_gaps.append(g)
            if in_gaps:
                g = np.concatenate(in_gaps)
                if len(g) >= 6 and np.median(g) >= 3_000:
                    self.donors.append(g)

    # ---- items
    def popular(self, k: int) -> list[str]:
        idx = np.searchsorted(self.cdf, self.rng.random(k), side="right")
        return [self.items[i] for i in np.minimum(idx, len(self.items) - 1)]

    def obscure_items(self, k: int) -> list[str]:
        k = min(k, len(self.obscure))
        return [self.items[i] for i in self.rng.choice(self.obscure, size=k, replace=False)]

    def sorted_items(self) -> list[str]:
        if self._sorted_items is None:
            numeric = all(s.isdigit() for s in self.items[:1000])
            self._sorted_items = sorted(self.items, key=(lambda s: (len(s), s)) if numeric else None)
        return self._sorted_items

    # ---- timing
    def machine_gaps(self, n: int, period_ms: tuple[float, float], fast_ok: bool = True) -> np.ndarray:
        rng = self.rng
        u = rng.random()
        if u < 0.5 or (not fast_ok and u < 0.65):  # a fixed period
            period = _loguniform(rng, *period_ms)
            if rng.random() < 0.4:
                period = max(1_000.0, round(period / 1_000) * 1_000)
            g = period * (1 + rng.uniform(0.003, 0.05) * rng.standard_normal(n))
        elif u < 0.8 or not fast_ok:  # a scripted random sleep
            a = _loguniform(rng, *period_ms)
            g = rng.uniform(a, a * rng.uniform(1.5, 4.0), n) + rng.exponential(50, n)
        else:
            g = self.fast_gaps(n, (80, 1_000))
        return np.clip(g, 20, _GAP_CAP_MS).astype(np.int64)

    def fast_gaps(self, n: int, base_ms: tuple[float, float]) -> np.ndarray:
        base = _loguniform(self.rng, *base_ms)
        g = base + self.rng.exponential(base * self.rng.uniform(0.05, 0.5), n)
        return np.clip(g, 10, _GAP_CAP_MS).astype(np.int64)

    def human_gaps(self, n: int, median_ms: tuple[float, float], floor_ms: float = 1_000,
                   copy_ok: bool = True) -> np.ndarray:
        rng = self.rng
        if copy_ok and self.donors and rng.random() < 0.4:
            d = self.donors[int(rng.integers(len(self.donors)))]
            off = int(rng.integers(len(d)))
            g = np.take(d, np.arange(off, off + n), mode="wrap") * rng.uniform(0.85, 1.15, n)
        else:
            med, sigma = _loguniform(rng, *median_ms), rng.uniform(0.5, 1.05)
            g = med * np.exp(sigma * rng.standard_normal(n))
            stretch = rng.random(n) < rng.uniform(0.02, 0.08)
            g[stretch] *= rng.uniform(3, 10, int(stretch.sum()))
        return np.clip(g, floor_ms, _GAP_CAP_MS).astype(np.int64)

    def timing(self, n: int, p_machine: float, machine_ms: tuple[float, float],
               human_ms: tuple[float, float], fast_ok: bool = True) -> tuple[str, np.ndarray]:
        if self.rng.random() < p_machine:
            return "machine", self.machine_gaps(max(0, n - 1), machine_ms, fast_ok)
        return "human", self.human_gaps(max(0, n - 1), human_ms)

    # ---- placement
    def fit(self, run: _Run) -> _Run:
        """Cut a run whose duration exceeds the period."""
        cs = np.cumsum(run.gaps)
        if len(cs) and cs[-1] > self.span:
            k = int(np.searchsorted(cs, self.span, side="right"))
            run.gaps, run.steps = run.gaps[:k], run.steps[: k + 1]
        return run

    def random_start(self, duration: int) -> int:
        return self.start + int(self.rng.integers(0, max(0, self.span - duration) + 1))

    def anchor(self, spread: int) -> tuple[int, int]:
        spread = min(spread, self.span)
        return self.random_start(spread), spread

    def near(self, anchor: int, spread: int, duration: int) -> int:
        s = anchor + int(self.rng.integers(0, spread + 1))
        return max(self.start, min(s, self.end - duration))


def _run_len(rng: np.random.Generator, short: float, mid: tuple[float, float, float],
             long: tuple[float, float]) -> int:
    """8-15 events with probability ``short``, else log-uniform in mid[1:] (probability mid[0]) or long."""
    u = rng.random()
    if u < short:
        return int(rng.integers(8, 16))
    if u < short + mid[0]:
        return int(round(_loguniform(rng, mid[1], mid[2])))
    return int(round(_loguniform(rng, *long)))


def _duration(run: _Run) -> int:
    return int(run.gaps.sum()) if len(run.gaps) else 0


# ---------------------------------------------------------------------------------------------- kinds


def _scraper(ctx: _Ctx, count: int) -> list[_Run]:
    rng, v, runs = ctx.rng, ctx.p.view, []
    n_items = len(ctx.items)
    for _ in range(count):
        n = _run_len(rng, 0.0, (0.3, 15, 50), (50, 300))
        mode = rng.choice(["walk", "uniform", "monitor", "bestseller"], p=[0.35, 0.3, 0.2, 0.15])
        if mode == "walk":
            cat = ctx.sorted_items()
            stride, off = int(rng.choice([1, 1, 1, 2, 3, 5])), int(rng.integers(n_items))
            items = [cat[(off + stride * j) % n_items] for j in range(n)]
        elif mode == "uniform":
            items = [ctx.items[i] for i in rng.choice(n_items, size=n, replace=n > n_items)]
        elif mode == "monitor":
            watch = ctx.popular(int(rng.integers(5, 31))) if rng.random() < 0.5 else \
                [ctx.items[i] for i in rng.choice(n_items, size=min(n_items, int(rng.integers(5, 31))),
                                                   replace=False)]
            items = [watch[j % len(watch)] for j in range(n)]
        else:
            order = np.argsort(-ctx.w, kind="stable")
            off = int(rng.integers(0, 51))
            items = [ctx.items[order[(off + j) % n_items]] for j in range(n)]
        timing, gaps = ctx.timing(n, 0.7, (500, 15_000), (10_000, 90_000))
        runs.append(_Run("scraper", timing, [(v, it) for it in items], gaps))
    return runs


def _click_farm(ctx: _Ctx, count: int) -> list[_Run]:
    rng, p, runs = ctx.rng, ctx.p, []
    while len(runs) < count:
        group = min(count - len(runs), int(rng.integers(3, 13)))
        targets = ctx.obscure_items(int(rng.integers(2, 9)))
        tw = rng.dirichlet(np.full(len(targets), 0.8))
        p_decoy, p_fav, p_cart, p_again = (rng.uniform(0.05, 0.35), rng.uniform(0, 0.3), rng.uniform(0, 0.2),
                                           rng.uniform(0, 0.4))
        anchor, spread = ctx.anchor(int(_loguniform(rng, 30 * _MIN, 12 * 60 * _MIN)))
        for _ in range(group):
            n = _run_len(rng, 0.25, (0.55, 15, 60), (60, 150))
            steps: list[Step] = []
            faved: set[str] = set()
            carted: set[str] = set()
            while len(steps) < n:
                if rng.random() < p_decoy:
                    steps.append((p.view, ctx.popular(1)[0]))
                    continue
                t = targets[int(rng.choice(len(targets), p=tw))]
                steps.append((p.view, t))
                if p.fav and t not in faved and rng.random() < p_fav:
                    faved.add(t)
                    steps.append((p.fav, t))
                if p.cart and t not in carted and rng.random() < p_cart:
                    carted.add(t)
                    steps.append((p.cart, t))
                if rng.random() < p_again:
                    steps.append((p.view, t))
            steps = steps[:n]
            timing, gaps = ctx.timing(n, 0.5, (1_000, 30_000), (5_000, 60_000))
            run = ctx.fit(_Run("click_farm", timing, steps, gaps))
            run.start = ctx.near(anchor, spread, _duration(run))
            runs.append(run)
    return runs


def _brushing(ctx: _Ctx, count: int) -> list[_Run]:
    rng, p, runs = ctx.rng, ctx.p, []
    while len(runs) < count:
        group = min(count - len(runs), int(rng.integers(2, 9)))
        targets = ctx.obscure_items(int(rng.integers(1, 5)))
        anchor, spread = ctx.anchor(int(_loguniform(rng, 60 * _MIN, 48 * 60 * _MIN)))
        for _ in range(group):
            orders, steps = int(rng.choice([1, 1, 2, 2, 3, 4])), []
            k = 0
            while k < orders or (len(steps) < 8 and k < 8):
                k += 1
                t = targets[int(rng.integers(len(targets)))]
                steps += [(p.view, it) for it in ctx.popular(int(rng.integers(0, 4)))]
                steps += [(p.view, t)] * int(rng.integers(1, 4))
                if p.fav and rng.random() < 0.3:
                    steps.append((p.fav, t))
                if p.cart:
                    steps.append((p.cart, t))
                if p.buy:
                    steps.append((p.buy, t))
            steps = steps[:40]
            timing, gaps = ctx.timing(len(steps), 0.35, (1_000, 20_000), (8_000, 90_000))
            run = ctx.fit(_Run("brushing", timing, steps, gaps))
            run.start = ctx.near(anchor, spread, _duration(run))
            runs.append(run)
    return runs


def _promo_abuse(ctx: _Ctx, count: int) -> list[_Run]:
    rng, p, runs = ctx.rng, ctx.p, []
    while len(runs) < count:
        group = min(count - len(runs), int(rng.integers(4, 16)))
        promo = ctx.items[int(rng.choice(ctx.top10))]
        addons = ctx.obscure_items(int(rng.integers(3, 11)))
        serial = rng.random() < 0.5
        anchor, spread = ctx.anchor(int(_loguniform(rng, 10 * _MIN, 180 * _MIN)))
        t_next = anchor
        for _ in range(group):
            n = int(rng.integers(8, 19))
            head: list[Step] = [] if rng.random() < 0.6 else [(p.view, it) for it in ctx.popular(int(rng.integers(1, 4)))]
            head.append((p.view, promo))
            viewed_addons: list[str] = []
            checkout: list[Step] = []
            if p.cart:
                checkout.append((p.cart, promo))
            browse: list[Step] = []
            while len(head) + len(browse) + len(checkout) < n:
                u = rng.random()
                if u < 0.3:
                    browse.append((p.view, promo))
                elif u < 0.8:
                    a = addons[int(rng.integers(len(addons)))]
                    browse.append((p.view, a))
                    if p.cart and a not in viewed_addons and len(viewed_addons) < 2 and rng.random() < 0.5:
                        viewed_addons.append(a)
                        checkout.append((p.cart, a))
                        if p.buy:
                            checkout.append((p.buy, a))
                else:
                    browse.append((p.view, ctx.popular(1)[0]))
            if p.fav and rng.random() < 0.2:
                browse.append((p.fav, promo))
            if p.buy:
                checkout.insert(1 if p.cart else 0, (p.buy, promo))
            # carts first, then the buys (one order)
            checkout.sort(key=lambda s: s[0] != p.cart)
            steps = head + browse + checkout
            timing, gaps = ctx.timing(len(steps), 0.5, (700, 15_000), (5_000, 60_000))
            run = ctx.fit(_Run("promo_abuse", timing, steps, gaps))
            dur = _duration(run)
            if serial:
                if t_next + dur > ctx.end:  # the period ends: the abuser carries on from somewhere else
                    t_next = ctx.random_start(dur)
                run.start = max(ctx.start, t_next)
                t_next = run.start + dur + int(rng.integers(1 * _MIN, 10 * _MIN))
            else:
                run.start = ctx.near(anchor, spread, dur)
            runs.append(run)
    return runs


def _takeover(ctx: _Ctx, count: int) -> list[_Run]:
    rng, p, runs = ctx.rng, ctx.p, []
    cands = [u for u, evs in ctx.normal.items() if len(evs) >= 2]
    order = rng.permutation(len(cands)) if cands else np.array([], dtype=np.int64)
    tries = 0
    for ci in order:
        if len(runs) >= count or tries > 50 * max(1, count):
            break
        tries += 1
        victim = cands[int(ci)]
        evs = ctx.normal[victim]
        own = {e[2] for e in evs}

        def fresh(k: int, own: set[str] = own) -> list[str]:
            out = [it for it in ctx.popular(3 * k + 5) if it not in own]
            return out[:k] if len(out) >= k else out + ctx.popular(k - len(out))

        u = rng.random()
        if p.buy and p.cart and u < 0.5:  # cash-out: browse, cart, buy
            viewed = fresh(int(rng.integers(3, 11)))
            picked = list(dict.fromkeys(viewed))[: int(rng.integers(1, 5))]
            steps = [(p.view, it) for it in viewed] + [(p.cart, it) for it in picked]
            steps += [(p.buy, it) for it in picked]
            while len(steps) < 8:
                steps.insert(0, (p.view, fresh(1)[0]))
        elif p.buy and p.cart and u < 0.7:  # drain: the same (gift-card-like) item bought again and again
            x = fresh(1)[0]
            steps = [(p.view, x), (p.cart, x), (p.buy, x)] * int(rng.integers(3, 9))
        else:
            steps = [(p.view, it) for it in fresh(int(rng.integers(8, 31)))]
            if p.cart and rng.random() < 0.5:
                steps.append((p.cart, steps[-1][1]))
        timing, gaps = ctx.timing(len(steps), 0.5, (500, 10_000), (4_000, 60_000))
        run = ctx.fit(_Run("takeover", timing, steps, gaps, user_id=victim))
        start = _victim_window(ctx, [e[0] for e in evs], _duration(run))
        if start is None:
            continue
        run.start = start
        runs.append(run)
    return runs


def _victim_window(ctx: _Ctx, ts: list[int], duration: int) -> int | None:
    """A start for the attack that overlaps none of the victim's events (ts, in time order)."""
    rng = ctx.rng
    if rng.random() < 0.3:  # session hijack: right after one of the victim's events
        for i in rng.permutation(len(ts))[:20]:
            s = ts[i] + int(rng.integers(1 * _MIN, 15 * _MIN))
            nxt = ts[i + 1] if i + 1 < len(ts) else None
            if ctx.start <= s and s + duration <= ctx.end and (nxt is None or nxt > s + duration + 5 * _MIN):
                return s
    margin = SESSION_GAP_MS + 5 * _MIN
    bounds = [ctx.start - margin, *sorted(ts), ctx.end + margin]
    windows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        lo, hi = max(ctx.start, a + margin), min(ctx.end, b - margin) - duration
        if hi >= lo:
            windows.append((lo, hi))
    if not windows:
        return None
    size = np.array([hi - lo + 1 for lo, hi in windows], dtype=np.float64)
    lo, hi = windows[int(rng.choice(len(windows), p=size / size.sum()))]
    return lo + int(rng.integers(0, hi - lo + 1))


def _fallback_steps(ctx: _Ctx, n: int) -> list[Step]:
    return [(ctx.p.view, it) for it in ctx.popular(n)]


def _replay_clock(ctx: _Ctx, count: int) -> list[_Run]:
    rng, runs = ctx.rng, []
    for _ in range(count):
        if ctx.session_gaps:
            content, rec = ctx.session_gaps[int(rng.integers(len(ctx.session_gaps)))]
        else:
            content = _fallback_steps(ctx, int(rng.integers(3, 10)))
            rec = ctx.human_gaps(len(content) - 1, (10_000, 60_000), copy_ok=False)
        content = content[:300]
        L = len(content)
        k_min = math.ceil(8 / L)
        if rng.random() < 0.75:
            k = min(int(rng.integers(k_min, k_min + 6)), max(1, 300 // L))
            steps = (content * k)[:300]
            period = _loguniform(rng, 2_000, 60_000)
            if rng.random() < 0.4:
                period = max(1_000.0, round(period / 1_000) * 1_000)
            gaps = period * (1 + rng.uniform(0.003, 0.03) * rng.standard_normal(len(steps) - 1))
            timing = "machine"
        else:
            k = max(2, min(int(rng.integers(k_min, k_min + 5)), max(2, 300 // L)))
            steps = content * k
            parts = []
            for j in range(k):
                if j:
                    parts.append(np.array([rng.uniform(2_000, 5 * _MIN)]))
                parts.append(np.minimum(rec, _GAP_CAP_MS) * rng.uniform(0.95, 1.05, len(rec)))
            gaps = np.concatenate(parts)
            steps, gaps = steps[:300], gaps[:299]
            timing = "human"
        runs.append(_Run("replay_clock", timing, steps, np.clip(gaps, 0, _GAP_CAP_MS).astype(np.int64)))
    return runs


def _replay_fast(ctx: _Ctx, count: int) -> list[_Run]:
    rng, runs = ctx.rng, []
    users = ctx.user_sessions
    for _ in range(count):
        n = _run_len(rng, 0.3, (0.5, 15, 60), (60, 300))
        evs: list[Event] = []  # recorded events, with the recorded gaps between consecutive ones
        rec: list[int] = []
        for _guard in range(50):
            if len(evs) >= n or not users:
                break
            sess = users[int(rng.integers(len(users)))]
            for j, s in enumerate(sess[int(rng.integers(len(sess))):]):
                if evs:  # a switch to another recorded user has no recorded gap: a short pause
                    rec.append(min(s[0][0] - evs[-1][0], 10 * _MIN) if j else int(rng.integers(5_000, 120_000)))
                rec += [min(b[0] - a[0], 10 * _MIN) for a, b in zip(s[:-1], s[1:], strict=True)]
                evs += s
                if len(evs) >= n:
                    break
        steps = [(e[1], e[2]) for e in evs[:n]]
        rec = rec[: max(0, len(steps) - 1)]
        if len(steps) < 8:
            rec += [int(rng.integers(5_000, 60_000)) for _ in range(8 - len(steps) - (0 if steps else 1))]
            steps += _fallback_steps(ctx, 8 - len(steps))
        if rng.random() < 0.6:
            gaps = ctx.fast_gaps(len(steps) - 1, (80, 1_000))
        else:  # the recorded gaps, time-compressed
            gaps = np.maximum(np.asarray(rec, dtype=np.float64) / rng.uniform(20, 200), 50).astype(np.int64)
        runs.append(_Run("replay_fast", "machine", steps, gaps))
    return runs


def _burst(ctx: _Ctx, count: int) -> list[_Run]:
    rng, p, runs = ctx.rng, ctx.p, []
    for _ in range(count):
        machine = rng.random() < 0.6
        n_bursts = 1 if rng.random() < 0.6 else int(rng.integers(2, 6))
        mode = rng.choice(["snipe", "sweep", "hammer"], p=[0.45, 0.35, 0.2] if p.cart else [0.0, 0.6, 0.4])
        hot = ctx.popular(3)
        steps: list[Step] = []
        gaps_parts: list[np.ndarray] = []
        for b in range(n_bursts):
            m = int(rng.integers(8, 16))
            if mode == "snipe":
                burst: list[Step] = []
                while len(burst) < m:
                    x = hot[int(rng.integers(len(hot)))]
                    burst += [(p.view, x)] * int(rng.integers(2, 7)) + [(p.cart, x)]
                    if p.buy:
                        burst.append((p.buy, x))
                burst = burst[:m]
            elif mode == "sweep":
                burst = [(p.view, it) for it in ctx.popular(m)]
            else:
                burst = [(p.view, hot[0])] * m
            if b:
                gaps_parts.append(np.array([rng.integers(1 * _MIN, 15 * _MIN)], dtype=np.int64))
            steps += burst
            if machine:
                gaps_parts.append(ctx.fast_gaps(m - 1, (30, 600)))
            else:
                med, sigma = _loguniform(rng, 1_500, 5_000), rng.uniform(0.3, 0.6)
                g = np.clip(med * np.exp(sigma * rng.standard_normal(m - 1)), 400, _GAP_CAP_MS)
                gaps_parts.append(g.astype(np.int64))
        runs.append(_Run("burst", "machine" if machine else "human", steps, np.concatenate(gaps_parts)))
    return runs


_BUILDERS: dict[str, Callable[[_Ctx, int], list[_Run]]] = {
    "scraper": _scraper,
    "click_farm": _click_farm,
    "brushing": _brushing,
    "promo_abuse": _promo_abuse,
    "takeover": _takeover,
    "replay_clock": _replay_clock,
    "replay_fast": _replay_fast,
    "burst": _burst,
}


def generate(normal: dict[str, list[tuple[int, str, str]]], platform: Platform, start_ms: int, end_ms: int, *,
             per_kind: int | dict[str, int] = 30, seed: int = 0, kinds: tuple[str, ...] = KINDS,
             sources: dict[str, list[tuple[int, str, str]]] | None = None,
             ) -> tuple[list[dict], list[Attacker]]:
    """normal: the test period's real users, user -> [(ts_ms, type, item)] in time order (takeover victims are
    drawn from them). sources: real sessions (training-period users) to replay / copy timing from, default
    normal. Attacks start at random times in [start_ms, end_ms - duration]. Returns the attack events as
    {"user_id", "ts", "type", "item_id"} dicts (unsorted) and one Attacker per attacking user id."""
    unknown = [k for k in kinds if k not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown attack kinds: {unknown}")
    if not platform.items:
        raise ValueError("the platform has no items")
    rng = np.random.default_rng(seed)
    ctx = _Ctx(normal, platform, start_ms, end_ms, normal if sources is None else sources, rng)
    events: list[dict] = []
    attackers: list[Attacker] = []
    for kind in kinds:
        count = per_kind if isinstance(per_kind, int) else int(per_kind.get(kind, 0))
        if count <= 0:
            continue
        for run in _BUILDERS[kind](ctx, count):
            run = ctx.fit(run)
            dur = _duration(run)
            start = ctx.random_start(dur) if run.start is None else run.start
            ts = (start + np.concatenate([[0], np.cumsum(run.gaps)])).astype(np.int64).tolist()
            uid = run.user_id if run.user_id is not None else ctx.ids.new()
            for t, (ty, it) in zip(ts, run.steps, strict=True):
                events.append({"user_id": uid, "ts": int(t), "type": ty, "item_id": it})
            attackers.append(Attacker(uid, kind, run.timing, [int(t) for t in ts], victim=run.user_id is not None))
    return events, attackers


