"""Synthetic traffic: realistic normals, every attack labelled, deterministic, streaming."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from stream.events import validate_record
from training.synth import ATTACKS, SynthConfig, generate, generate_list


@pytest.fixture(scope="module")
def traffic():
    return generate_list(events=60_000, seed=7)


def test_every_record_satisfies_the_event_contract(traffic):
    for rec in traffic[:5000]:
        validate_record(rec)


def test_same_seed_same_events_and_other_seed_other_events():
    assert generate_list(events=3000, seed=1) == generate_list(events=3000, seed=1)
    assert generate_list(events=3000, seed=1) != generate_list(events=3000, seed=2)


def test_stream_is_in_event_time_order_and_stops_at_the_requested_count(traffic):
    ts = np.array([r["ts"] for r in traffic])
    assert len(traffic) == 60_000
    assert (np.diff(ts) >= 0).all()


def test_every_attack_kind_appears_and_carries_label_and_name(traffic):
    kinds = Counter(r.get("attack") for r in traffic if r["label"] == 1)
    assert set(kinds) == set(ATTACKS)
    assert all(r.get("attack") is None for r in traffic if r["label"] == 0)


def test_normal_traffic_has_a_realistic_event_mix_and_gaps(traffic):
    normal = [r for r in traffic if r["label"] == 0]
    mix = Counter(r["type"] for r in normal)
    share = {t: mix[t] / len(normal) for t in mix}
    assert 0.6 < share["view"] < 0.9
    assert 0.02 < share["cart"] < 0.08 and 0.005 < share["buy"] < 0.04
    by_user = defaultdict(list)
    for r in normal:
        by_user[r["session_id"]].append(r["ts"])
    gaps = np.concatenate([np.diff(v) for v in by_user.values() if len(v) > 1]) / 1000
    assert 20 < np.median(gaps) < 120  # real logs: ~50 s


def test_mimicry_matches_normal_type_counts_but_not_timing(traffic):
    normal = [r for r in traffic if r["label"] == 0]
    mimic = [r for r in traffic if r.get("attack") == "mimicry"]
    n_mix, m_mix = Counter(r["type"] for r in normal), Counter(r["type"] for r in mimic)
    assert abs(n_mix["view"] / len(normal) - m_mix["view"] / len(mimic)) < 0.12
    sess = defaultdict(list)
    for r in mimic:
        sess[r["session_id"]].append(r["ts"])
    gaps = np.concatenate([np.diff(v) for v in sess.values() if len(v) > 1])
    assert np.std(gaps) / np.mean(gaps) < 0.1  # metronomic, unlike log-normal human gaps


def test_generation_streams_in_bounded_chunks():
    sizes = [len(c) for c in generate(SynthConfig(events=20_000, seed=3))]
    assert sum(sizes) == 20_000 and len(sizes) > 5 and max(sizes) < 5_000
