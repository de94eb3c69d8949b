"""Synthetic e-commerce traffic with ground truth: normal shoppers plus labelled attacks.

Normal shoppers were matched to the real samples in ``../shared/data`` (see
docs/synthetic-traffic.md): within-session gaps are log-normal with a median near 50 s
and a heavy tail (Taobao p10/p50/p90 = 9/47/325 s, YOOCHOOSE 10/56/299 s); session
lengths are heavy-tailed with a mean of 4-6 events; views are ~80-90 % of events with
cart ~4 %, favourite ~3 % and buy ~2 %; activity follows a daily rhythm with a night
trough and an evening peak; a Pareto-distributed share of users return again and again.

Attacks (every attack event carries ``label=1`` and ``attack=<kind>``):

* ``click_farming`` - long, fast, metronomic view/click loops over 1-3 target items.
* ``brushing`` - fake orders: search -> view -> cart -> buy -> pay -> review on one cheap
  item, repeated with short, regular gaps.
* ``scraping`` - a bot viewing many distinct items at a steady sub-second to few-second pace.
* ``promo_abuse`` - fresh accounts: login -> coupon -> cart -> buy -> pay, coupon every time.
* ``account_takeover`` - a normal user's account (normal history, label 0) is taken over:
  a login from a new device, then rapid carting and buying of expensive items.
* ``mimicry`` - the per-user counts of each event type are copied from a real normal
  session, but the order is shuffled (buys before views) and the gaps are near-constant.

The generator is deterministic in its seed and streams hour by hour, so memory is
bounded by one hour of traffic whatever the total (1k .. 10M+ events).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

ATTACKS: tuple[str, ...] = (
    "click_farming",
    "brushing",
    "scraping",
    "promo_abuse",
    "account_takeover",
    "mimicry",
)
NORMAL_TYPES = ("view", "click", "search", "fav", "cart", "buy", "pay", "login", "coupon", "review", "refund")
# Relative activity by hour of day (UTC), shaped on the Taobao sample's hourly counts:
# deep trough before dawn, climb through the day, evening peak.
HOURLY_PROFILE = np.array(
    [0.55, 0.35, 0.2, 0.15, 0.15, 0.2, 0.35, 0.55, 0.75, 0.85, 0.95, 1.0,
     0.95, 0.9, 0.95, 1.0, 1.0, 0.95, 0.95, 1.1, 1.25, 1.4, 1.5, 1.0]
)  # fmt: skip
HOUR_MS = 3_600_000

# Normal-session type transitions: a browse-heavy funnel (view -> click -> cart -> buy -> pay).
_T = {
    "start": {"view": 0.78, "search": 0.14, "login": 0.07, "coupon": 0.01},
    "login": {"view": 0.7, "search": 0.3},
    "search": {"view": 0.85, "search": 0.15},
    "view": {"view": 0.76, "click": 0.09, "search": 0.07, "fav": 0.04, "cart": 0.05, "end": 0.04},
    "click": {"view": 0.55, "cart": 0.15, "fav": 0.08, "click": 0.12, "end": 0.10},
    "fav": {"view": 0.7, "cart": 0.15, "end": 0.15},
    "cart": {"view": 0.45, "buy": 0.35, "cart": 0.08, "coupon": 0.02, "end": 0.10},
    "coupon": {"buy": 0.5, "view": 0.4, "end": 0.1},
    "buy": {"pay": 0.92, "view": 0.05, "end": 0.03},
    "pay": {"view": 0.35, "review": 0.03, "refund": 0.01, "end": 0.61},
    "review": {"view": 0.3, "end": 0.7},
    "refund": {"end": 1.0},
}


def _table(t: dict[str, dict[str, float]]) -> dict[str, tuple[list[str], np.ndarray]]:
    out = {}
    for k, row in t.items():
        p = np.array(list(row.values()), dtype=float)
        out[k] = (list(row), np.cumsum(p / p.sum()))
    return out


_TABLE = _table(_T)


@dataclass
class SynthConfig:
    """What to generate. ``users`` defaults to one user per ~60 events."""

    events: int = 100_000
    seed: int = 0
    users: int | None = None
    attacker_fraction: float = 0.03
    attacks: tuple[str, ...] = ATTACKS
    start_ms: int = 1_793_491_200_000  # 2026-11-01T00:00:00Z
    sessions_per_user_day: float = 1.5
    median_gap_s: float = 60.0
    gap_sigma: float = 1.3
    catalog: int = 50_000
    extra: dict = field(default_factory=dict)


@dataclass
class _Actor:
    uid: str
    kind: str  # "normal" or an attack name
    weight: float
    device: str
    ip: str
    taken_over: bool = False


class _Gen:
    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        rng = self.rng
        n_users = cfg.users or max(100, cfg.events // 60)
        n_attack = max(len(cfg.attacks), int(round(n_users * cfg.attacker_fraction))) if cfg.attacks else 0
        ids = rng.permutation(n_users + n_attack)  # ids do not reveal who attacks
        self.actors: list[_Actor] = []
        for i in range(n_users + n_attack):
            kind = "normal" if i < n_users else cfg.attacks[(i - n_users) % len(cfg.attacks)]
            weight = float(rng.pareto(1.5) + 1.0) if kind == "normal" else 1.0
            self.actors.append(
                _Actor(f"u{ids[i]:07d}", kind, weight, f"d{rng.integers(1 << 40):x}", self._ip())
            )
        self.normals = [a for a in self.actors if a.kind == "normal"]
        w = np.array([a.weight for a in self.normals])
        self.normal_cdf = np.cumsum(w / w.sum())
        self.attackers = [a for a in self.actors if a.kind != "normal"]
        # account takeover hits existing normal accounts; give each ATO actor a victim
        for a in self.attackers:
            if a.kind == "account_takeover":
                victim = self.normals[int(rng.integers(len(self.normals)))]
                a.uid = victim.uid
        pop = 1.0 / np.arange(1, cfg.catalog + 1) ** 1.1  # Zipf item popularity
        self.item_cdf = np.cumsum(pop / pop.sum())
        self.item_price = np.round(np.exp(rng.normal(3.6, 1.1, cfg.catalog)), 2)
        self.item_cat = rng.integers(0, 500, cfg.catalog)
        self.event_no = 0
        self.session_no = 0

    def _ip(self) -> str:
        r = self.rng.integers(1, 255, 4)
        return f"{r[0]}.{r[1]}.{r[2]}.{r[3]}"

    def _items(self, k: int) -> np.ndarray:
        return np.searchsorted(self.item_cdf, self.rng.random(k))

    def _gaps(self, k: int, median_s: float, sigma: float) -> np.ndarray:
        return np.maximum(1, np.exp(self.rng.normal(np.log(median_s * 1000), sigma, k))).astype(np.int64)

    def _emit(self, a: _Actor, ts: np.ndarray, types: list[str], items: np.ndarray, label: int, attack: str | None,
              device: str | None = None, ip: str | None = None) -> list[dict]:
        sid = f"s{self.session_no}"
        self.session_no += 1
        out = []
        for t, ty, it in zip(ts.tolist(), types, items.tolist(), strict=True):
            ev = {"user_id": a.uid, "ts": t, "type": ty, "event_id": f"e{self.event_no}", "session_id": sid,
                  "device_id": device or a.device, "ip": ip or a.ip, "label": label}
            self.event_no += 1
            if ty not in ("search", "login", "coupon"):
                ev["item_id"] = f"i{it}"
                ev["category_id"] = f"c{self.item_cat[it]}"
                ev["price"] = float(self.item_price[it])
            if attack:
                ev["attack"] = attack
            out.append(ev)
        return out

    # ---- sessions ------------------------------------------------------------------
    def normal_types(self, max_len: int = 200) -> list[str]:
        types: list[str] = []
        state = "start"
        rng = self.rng
        while len(types) < max_len:
            names, cdf = _TABLE[state]
            nxt = names[int(np.searchsorted(cdf, rng.random()))]
            if nxt == "end":
                break
            types.append(nxt)
            state = nxt
        return types or ["view"]

    def normal_session(self, a: _Actor, t0: int) -> list[dict]:
        types = self.normal_types()
        k = len(types)
        gaps = self._gaps(k, self.cfg.median_gap_s, self.cfg.gap_sigma)
        gaps[0] = 0
        # buy -> pay is quick (checkout), search -> view is quick (results page)
        for i in range(1, k):
            if types[i] == "pay":
                gaps[i] = int(self.rng.integers(3_000, 40_000))
        ts = t0 + np.cumsum(gaps)
        # shoppers return to items they looked at: ~25 % of item events revisit an earlier one
        items = self._items(k)
        for i in range(1, k):
            if types[i] in ("cart", "buy", "pay", "fav", "review", "refund") or self.rng.random() < 0.25:
                items[i] = items[int(self.rng.integers(0, i))]
        return self._emit(a, ts, types, items, 0, None)

    def attack_session(self, a: _Actor, t0: int) -> list[dict]:
        rng = self.rng
        kind = a.kind
        if kind == "click_farming":
            k = int(rng.integers(30, 120))
            targets = self._items(int(rng.integers(1, 4)))
            types = ["view" if i % 2 == 0 else "click" for i in range(k)]
            items = targets[rng.integers(0, len(targets), k)]
            gaps = rng.normal(4_000, 400, k).clip(1_000).astype(np.int64)
        elif kind == "brushing":
            n = int(rng.integers(3, 10))
            types, item_list = [], []
            cheap = np.flatnonzero(self.item_price < 15)
            item = int(cheap[rng.integers(len(cheap))]) if len(cheap) else 0
            for _ in range(n):
                types += ["search", "view", "cart", "buy", "pay", "review"]
                item_list += [item] * 6
            k = len(types)
            items = np.array(item_list)
            gaps = rng.normal(6_000, 1_500, k).clip(1_000).astype(np.int64)
        elif kind == "scraping":
            k = int(rng.integers(80, 300))
            types = ["view"] * k
            start = int(rng.integers(0, self.cfg.catalog - k))
            items = np.arange(start, start + k)
            gaps = rng.normal(1_500, 300, k).clip(200).astype(np.int64)
        elif kind == "promo_abuse":
            types = ["login", "coupon", "view", "cart", "coupon", "buy", "pay"]
            k = len(types)
            items = np.repeat(self._items(1), k)
            gaps = rng.normal(8_000, 2_000, k).clip(1_000).astype(np.int64)
            a.device = f"d{rng.integers(1 << 40):x}"  # a fresh device per abuse run
        elif kind == "account_takeover":
            if not a.taken_over:  # until the takeover, the account behaves like its owner
                a.taken_over = rng.random() < 0.5
                return self.normal_session(a, t0)
            n = int(rng.integers(3, 8))
            types = ["login", "view"] + ["cart", "buy", "pay"] * n
            k = len(types)
            pricey = np.flatnonzero(self.item_price > 300)
            items = pricey[rng.integers(0, len(pricey), k)] if len(pricey) else self._items(k)
            gaps = rng.normal(7_000, 2_000, k).clip(1_000).astype(np.int64)
            gaps[0] = 0
            return self._emit(a, t0 + np.cumsum(gaps), types, items, 1, kind, device=f"d{rng.integers(1 << 40):x}",
                              ip=self._ip())
        elif kind == "mimicry":
            # same multiset of types as a genuine session, wrong order, machine-regular timing
            types = []
            while len(types) < 6:
                types += self.normal_types()
            types = [types[i] for i in rng.permutation(len(types))]
            k = len(types)
            items = self._items(k)
            gaps = rng.normal(45_000, 1_000, k).clip(1_000).astype(np.int64)
        else:
            raise ValueError(f"unknown attack {kind!r}")
        gaps[0] = 0
        return self._emit(a, t0 + np.cumsum(gaps), types, items, 1, kind)

    # ---- hour-by-hour stream -----------------------------------------------------------
    def hours(self) -> Iterator[list[dict]]:
        cfg = self.cfg
        rng = self.rng
        pending: list[tuple[int, int, dict]] = []  # (ts, seq, event) spilling past an hour
        seq = 0
        emitted = 0
        hour = 0
        base_rate = len(self.normals) * cfg.sessions_per_user_day / HOURLY_PROFILE.sum()
        attack_rate = 0.8  # sessions per attacker per day-hour block of 24 (bots keep no hours)
        while emitted < cfg.events:
            h0 = cfg.start_ms + hour * HOUR_MS
            h1 = h0 + HOUR_MS
            n_sess = int(rng.poisson(base_rate * HOURLY_PROFILE[hour % 24]))
            who = np.searchsorted(self.normal_cdf, rng.random(n_sess))
            starts = rng.integers(h0, h1, n_sess)
            for w, t0 in zip(who.tolist(), starts.tolist(), strict=True):
                for ev in self.normal_session(self.normals[w], t0):
                    heapq.heappush(pending, (ev["ts"], seq, ev))
                    seq += 1
            n_att = int(rng.poisson(len(self.attackers) * attack_rate / 24))
            for i, t0 in zip(rng.integers(0, max(1, len(self.attackers)), n_att).tolist(),
                             rng.integers(h0, h1, n_att).tolist(), strict=True):
                if not self.attackers:
                    break
                for ev in self.attack_session(self.attackers[i], t0):
                    heapq.heappush(pending, (ev["ts"], seq, ev))
                    seq += 1
            chunk = []
            while pending and pending[0][0] < h1 and emitted + len(chunk) < cfg.events:
                chunk.append(heapq.heappop(pending)[2])
            emitted += len(chunk)
            hour += 1
            if chunk:
                yield chunk


def generate(cfg: SynthConfig | None = None, **kwargs: object) -> Iterator[list[dict]]:
    """Yield time-ordered chunks (about an hour of traffic each) of contract records.

    Deterministic: the same config gives the same events. Stops after ``cfg.events``.
    """
    cfg = cfg or SynthConfig(**kwargs)  # type: ignore[arg-type]
    yield from _Gen(cfg).hours()


def generate_list(cfg: SynthConfig | None = None, **kwargs: object) -> list[dict]:
    """All generated records in one list (for small runs and tests)."""
    return [ev for chunk in generate(cfg, **kwargs) for ev in chunk]
