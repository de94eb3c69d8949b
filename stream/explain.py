"""What was unusual about an alerted window, in numbers and words, from the raw window.

The model's score says *that* a window is unusual; an analyst needs to know *what* about
it. :func:`summarise` reads one window's own arrays (event times, store type ids, item
hashes - :class:`stream.windows.Windows`, one row) and returns the numbers an analyst
checks first (count, span, rate, gaps, regularity, items, unseen event types) and a few
short sentences built from them, e.g. ``"41 events in 3 min (13.3/min) on 2 items"``,
``"gaps min 4.4 s, median 4.4 s, regular within 1 %"``. Both runtimes build alerts with it
(stream.detector), from the same windows, so `seqsentry run` and `seqsentry score` say the
same thing about the same event.

Nothing here depends on the model: the sentences describe the window, not the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.encoding import retraced_steps

#: A gap within this share of the recent gaps' median counts as "on the same clock".
REGULAR_TOLERANCE = 0.10
#: Trailing gaps that must be on one clock before the window is called regular.
MIN_REGULAR_GAPS = 4
#: Window of the peak-rate count (the classic "more than N events in 60 s" rule).
PEAK_WINDOW_MS = 60_000
#: Events with an item before the window's items are characterised at all.
MIN_ITEM_EVENTS = 4
#: An item holding more than this share of the window's item events is named.
TOP_ITEM_SHARE = 0.5
#: ... or when it holds at least this many events, whatever its share (a long fake-order cycle)
TOP_ITEM_EVENTS = 8
#: Item-to-item steps taken again before the window says it retraces its path.
MIN_RETRACED = 3
#: Events with an item before "every event on a different item" is said.
MIN_ALL_DISTINCT = 8
TOP_ITEMS = 3
#: Unseen event types named in a finding (the rest are counted); a name is cut to NAME_CHARS.
MAX_NAMED_TYPES = 3
NAME_CHARS = 40


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers (``stats``, JSON-ready) and sentences (``findings``) about one window."""

    stats: dict[str, Any]
    findings: list[str]

    @property
    def reasons(self) -> str:
        """The findings as one line."""
        return "; ".join(self.findings)


def item_hex(h: int) -> str | None:
    """An item hash (stream.events.item_hash) as 8 hex digits; None for "no item" (0)."""
    return f"{h:08x}" if h else None


def duration(ms: float) -> str:
    """A duration for people: ``350 ms``, ``4.4 s``, ``3 min``, ``2.5 h``."""
    if ms < 1_000:
        return f"{ms:.0f} ms"
    for unit, size in (("s", 1_000), ("min", 60_000), ("h", 3_600_000)):
        if ms < 60 * size or unit == "h":
            return f"{_short(ms / size)} {unit}"
    raise AssertionError  # unreachable


def _name(type_name: str) -> str:
    """An event type quoted for a sentence, cut to :data:`NAME_CHARS`."""
    return repr(type_name if len(type_name) <= NAME_CHARS else type_name[: NAME_CHARS - 1] + "…")


def _short(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _rate(per_min: float) -> str:
    return f"{per_min:.3g}/min" if per_min < 1000 else f"{per_min:,.0f}/min"


def _trailing_run(ok: np.ndarray) -> int:
    """How many trailing entries of a boolean vector are True."""
    bad = np.flatnonzero(~ok)
    return len(ok) if not len(bad) else len(ok) - 1 - int(bad[-1])


def _regular_run(gaps: np.ndarray) -> tuple[int, float | None]:
    """How many of the newest gaps are on one clock (within REGULAR_TOLERANCE of the median of the
    newest MIN_REGULAR_GAPS), and their largest relative deviation; (0, None) under MIN_REGULAR_GAPS."""
    if len(gaps) < MIN_REGULAR_GAPS:
        return 0, None
    ref = float(np.median(gaps[-MIN_REGULAR_GAPS:]))
    if ref > 0:
        dev = np.abs(gaps - ref) / ref
        run = _trailing_run(dev <= REGULAR_TOLERANCE)
        within = float(dev[len(dev) - run :].max()) if run else None
    else:
        run, within = _trailing_run(gaps == 0), 0.0
    return (0, None) if run < MIN_REGULAR_GAPS else (run, within)


def _gaps_sentence(gaps: np.ndarray, stats: dict[str, Any], run: int, within: float | None) -> str:
    g = f"gaps min {duration(stats['min_gap_ms'])}, median {duration(stats['median_gap_ms'])}"
    if run and within is not None:
        pct = f"{max(1, math.ceil(within * 100 - 1e-9))} %"
        if run == len(gaps):
            g += f", regular within {pct}"
        else:
            g += f", the last {run} regular within {pct} around {duration(float(np.median(gaps[-run:])))}"
    return g


def _items_sentence(stats: dict[str, Any], with_item: int) -> str | None:
    top = stats["top_items"][0]
    share = top["events"] / with_item
    if (share > TOP_ITEM_SHARE or top["events"] >= TOP_ITEM_EVENTS) and stats["distinct_items"] > 1:
        return f"item {top['item_hash']} in {top['events']} of {with_item} events ({share * 100:.0f} %)"
    if stats["distinct_items"] == 1:
        return f"every event on item {top['item_hash']}"
    if stats["distinct_items"] == with_item and with_item >= MIN_ALL_DISTINCT:
        return f"every event on a different item ({with_item} items)"
    return None


def summarise(ts: np.ndarray, types: np.ndarray, items: np.ndarray, type_names: Sequence[str],
              known: Callable[[str], bool], *, closing: bool = False, min_ended: int = 0,
              run_ceiling: Sequence[int] = (), run_counts: Sequence[int] = (),
              over_types: Sequence[tuple[str, int, int]] = ()) -> Summary:
    """Stats and findings of one window (oldest event first).

    ``ts`` int64 ms, ``types`` store type ids (indices into ``type_names``), ``items``
    uint32 item hashes (0 = none); ``known(name)`` says whether the model saw the type in
    training; ``closing`` marks the window of a session that ended; ``min_ended`` is the fewest
    events a normal training session ended with (the model's ``min_ended_events``; 0: not known);
    ``run_ceiling`` the model's ``run_ceiling`` (events, events on one item, retraced steps that
    all but a few normal training users stayed within; empty: not known) and ``run_counts`` the
    window's own counts as the scorer saw them (``Encoded.run_counts``), so that the finding names
    exactly what ``Scorer.beyond_ceiling`` acted on; ``over_types`` the (type, events, ceiling) of
    each type the window holds more of than any normal training user (model.types_beyond_ceiling).
    """
    n = len(ts)
    ts = np.asarray(ts, dtype=np.int64)
    gaps = np.diff(ts)
    span = int(ts[-1] - ts[0]) if n else 0
    type_ids, type_counts = np.unique(types, return_counts=True)
    names = [type_names[int(t)] for t in type_ids.tolist()]
    stats: dict[str, Any] = {"events": n, "span_ms": span}
    findings: list[str] = []

    unseen = [(name, int(c)) for name, c in zip(names, type_counts.tolist(), strict=True) if not known(name)]
    if unseen:
        listed = ", ".join(f"{_name(name)} ({c} of {n} events)" for name, c in unseen[:MAX_NAMED_TYPES])
        more = f" and {len(unseen) - MAX_NAMED_TYPES} more" if len(unseen) > MAX_NAMED_TYPES else ""
        findings.append(f"event type{'s' if len(unseen) > 1 else ''} never seen in training: {listed}{more}")

    if closing:
        over = f" over {duration(span)}" if n > 1 else ""
        soon = f" - no training session ended with fewer than {min_ended}" if n < min_ended else ""
        findings.append(f"session ended after {n} event{'s' if n != 1 else ''}{over}, "
                        f"the last a {_name(type_names[int(types[-1])])}{soon}")

    lead = len(findings)  # findings that explain an alert on their own come first

    # --- count, rate, peak ---
    rate = 60_000 * (n - 1) / span if span > 0 else None
    peak = int((np.searchsorted(ts, ts + PEAK_WINDOW_MS, side="left") - np.arange(n)).max()) if n else 0
    stats["rate_per_min"] = None if rate is None else round(rate, 3)
    stats["peak_60s"] = peak
    what = f"{n} {_name(names[0])} events" if len(names) == 1 and n > 1 else f"{n} event{'s' if n != 1 else ''}"
    if n > 1:
        head = f"{what} in {duration(span)}" if span > 0 else f"{what} within 1 ms"
        if rate is not None:
            head += f" ({_rate(rate)}" + (f", peak {peak} in 60 s)" if span > PEAK_WINDOW_MS else ")")
    else:
        head = what

    # --- items ---
    has_item = items != 0
    with_item = int(has_item.sum())
    stats["items"] = with_item
    if with_item:
        hashes, counts = np.unique(items[has_item], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:TOP_ITEMS]
        stats["distinct_items"] = len(hashes)
        stats["top_items"] = [{"item_hash": item_hex(int(hashes[i])), "events": int(counts[i])} for i in order]
        head += f" on {len(hashes)} item{'s' if len(hashes) != 1 else ''}"
    else:
        stats["distinct_items"] = 0
        stats["top_items"] = []
    findings.append(head)

    # --- gaps and their regularity ---
    stats["min_gap_ms"] = int(gaps.min()) if len(gaps) else None
    stats["median_gap_ms"] = round(float(np.median(gaps)), 1) if len(gaps) else None
    run, within = _regular_run(gaps)
    stats["regular_gaps"] = run
    stats["regular_within"] = None if within is None else round(within, 4)
    if len(gaps) >= 2:
        findings.append(_gaps_sentence(gaps, stats, run, within))
    elif len(gaps) == 1:
        findings.append(f"gap {duration(int(gaps[0]))}")

    # --- item concentration ---
    if with_item >= MIN_ITEM_EVENTS:
        concentration = _items_sentence(stats, with_item)
        if concentration:
            findings.append(concentration)
    steps, again = retraced_steps(items[None, :], np.arange(n)[None, :] > 0) if n else (np.zeros(1), np.zeros(1))
    stats["retraced_steps"] = int(again.sum())
    if stats["retraced_steps"] >= MIN_RETRACED:
        findings.append(f"{stats['retraced_steps']} of {int(steps.sum())} item-to-item steps retrace "
                        "steps taken earlier in the window")

    # --- the newest event, when it is the window's first of its type ---
    if n >= 2 and not closing:
        newest = types[-1]
        if int((types == newest).sum()) == 1:
            findings.append(f"{_name(type_names[int(newest)])} {duration(int(ts[-1] - ts[0]))} after the first "
                            f"{_name(type_names[int(types[0])])}")
    stats["unseen_types"] = [name for name, _ in unseen]
    if len(run_ceiling) and len(run_counts):
        beyond = [f"{k} {what} (training users' ceiling {c})"
                  for what, k, c in zip(("events in the window", "events on one item", "retraced item-to-item steps"),
                                        (int(x) for x in run_counts), run_ceiling, strict=True) if k > c]
        if beyond:  # the reason the window alerted, so it leads, after any unseen type or early end
            findings.insert(lead, "more than the platform's normal users run to: "
                            + ", ".join(beyond))
    if over_types:  # as above: the reason on its own
        findings.insert(lead, "more events of one type than any normal training user's window held: " + ", ".join(
            f"{k} {_name(name)} events (training users' most {c})" for name, k, c in over_types))
    return Summary(stats, findings)
