"""The training-side attack library: attacks made from a platform's own traffic."""

from __future__ import annotations

import numpy as np

from stream.events import Event
from training import attacks

T0 = 1_700_000_000_000


def platform_log(users: int = 40, seed: int = 0) -> list[Event]:
    """A small click-only log: people browsing a catalogue of 50 items at varied pace."""
    rng = np.random.default_rng(seed)
    evs = []
    for u in range(users):
        t = T0 + int(rng.integers(0, 3_600_000))
        for _ in range(int(rng.integers(1, 8))):
            evs.append(Event(f"user{u}", t, "click", item_id=f"item{int(rng.integers(50))}"))
            t += int(rng.lognormal(np.log(40_000), 1.0))
    return sorted(evs, key=lambda e: e.ts)


def attack_times(evs: list[Event]) -> dict[str, list[int]]:
    """Each attacker's own (labelled) event times."""
    runs: dict[str, list[int]] = {}
    for e in evs:
        if e.label == 1:
            runs.setdefault(e.user_id, []).append(e.ts)
    return runs


def test_injection_is_deterministic_in_its_seed():
    log = platform_log()
    a, b = attacks.inject(log, seed=4, count=30), attacks.inject(log, seed=4, count=30)
    assert [(e.user_id, e.ts, e.item_id) for e in a] == [(e.user_id, e.ts, e.item_id) for e in b]
    assert [e.ts for e in attacks.inject(log, seed=5, count=30)] != [e.ts for e in a]


def test_attacks_use_only_the_platforms_own_types_and_items():
    log = platform_log()
    evs = attacks.inject(log, seed=1, count=60)
    assert {e.type for e in evs} <= {"click"}
    assert {e.item_id for e in evs} <= {e.item_id for e in log}


def test_every_kind_is_injected_and_labelled_as_injected():
    evs = attacks.inject(platform_log(), seed=2, count=60)
    kinds = {e.attack for e in evs if e.label == 1}
    assert kinds == {attacks.PREFIX + k for k in attacks.KINDS}


def test_a_takeover_keeps_its_victims_history_normal_and_then_attacks_under_the_same_id():
    log = platform_log()
    rng = np.random.default_rng(0)
    evs = attacks.attacker(attacks.Platform.from_events(log), rng, "takeover", "victim-copy")
    assert {e.user_id for e in evs} == {"victim-copy"}
    labels = [e.label for e in sorted(evs, key=lambda e: e.ts)]
    assert labels[0] == 0 and 1 in labels


def test_machine_timing_is_regular_and_human_timing_varies():
    rng = np.random.default_rng(3)
    machine = attacks.gaps(rng, 200, "machine", 5_000).astype(float)
    human = attacks.gaps(rng, 200, "human", 5_000).astype(float)
    assert machine.std() / machine.mean() < 0.05 < 0.3 < human.std() / human.mean()


def test_attackers_land_inside_the_logs_time_range():
    log = platform_log()
    evs = attacks.inject(log, seed=6, count=36)
    assert min(e.ts for e in evs) >= log[0].ts
    assert all(e.ts >= T0 for e in evs)


def test_the_number_of_attackers_grows_with_the_log_within_bounds():
    assert attacks.n_attackers(10) == attacks.MIN_ATTACKERS
    assert attacks.n_attackers(10**6) == attacks.MAX_ATTACKERS
    assert attacks.MIN_ATTACKERS < attacks.n_attackers(2_000) < attacks.MAX_ATTACKERS


def test_some_attackers_keep_the_platforms_own_pace_so_speed_alone_cannot_separate_them():
    # people on this platform wait about five minutes between clicks: a pace the drawn range
    # (0.2-90 s) never yields, so only runs paced from the log itself land near it
    rng = np.random.default_rng(7)
    log = sorted((Event(f"user{u}", T0 + u * 1_000 + k * int(rng.uniform(280_000, 320_000)), "click",
                        item_id=f"item{int(rng.integers(50))}") for u in range(attacks.PACE_MIN_USERS)
                  for k in range(4)),
                 key=lambda e: e.ts)
    runs = attack_times(attacks.inject(log, seed=8, count=120))
    paced = [150_000 < np.median(np.diff(sorted(t))) < 600_000 for t in runs.values() if len(t) > 2]
    assert np.mean(paced) > 0.15
    assert attacks.Platform.from_events(log).pace_ms.min() > 150_000


def test_borrowed_gaps_lay_real_users_gap_sequences_end_to_end():
    runs = [[2_000, 400_000], [7_000, 7_000, 90_000]]
    g = attacks.borrowed_gaps(np.random.default_rng(0), [np.array(r) for r in runs], 11).tolist()
    assert len(g) == 11
    while g:  # whole runs in their own order, the last one perhaps cut
        run = next(r for r in runs if g[: len(r)] == r[: len(g)])
        g = g[len(run):]


def test_some_attackers_take_their_gaps_from_the_platforms_people_outright():
    # people here click twice 2 s apart, then read for 400 s: a shape no timing style around one
    # pace has, so only runs that copy the platform's gap sequences have it
    log = sorted((Event(f"user{u}", T0 + u * 1_000 + k // 2 * 402_000 + k % 2 * 2_000, "click",
                        item_id=f"item{(u + k) % 50}") for u in range(attacks.PACE_MIN_USERS) for k in range(6)),
                 key=lambda e: e.ts)
    runs = attack_times(attacks.inject(log, seed=9, count=240))
    copied = [np.isin(np.diff(sorted(t)), [2_000, 400_000]).mean() > 0.9 for t in runs.values() if len(t) > 4]
    assert 0.1 < np.mean(copied) < 0.5


def test_a_log_of_a_few_users_lends_no_pace_its_people_would_be_learnt_instead():
    log = [Event(f"user{u}", T0 + u * 1_000 + k * 300_000, "click") for u in range(attacks.PACE_MIN_USERS - 1)
           for k in range(4)]
    platform = attacks.Platform.from_events(sorted(log, key=lambda e: e.ts))
    assert len(platform.pace_ms) == 0 and platform.pace_runs == []


def paced_log(users: int = attacks.PACE_MIN_USERS) -> list[Event]:
    """Sessions of four clicks exactly 1 s apart (a platform whose sessions tick like a clock)."""
    return sorted((Event(f"user{u}", T0 + u * 3_600_000 + k * 1_000, "click", item_id=f"item{u % 7}")
                   for u in range(users) for k in range(4)), key=lambda e: e.ts)


def test_a_replay_at_the_platforms_own_pace_repeats_what_it_copies():
    # one real session played once at its own pace would be that session labelled as abuse
    p = attacks.Platform.from_events(paced_log())
    rng = np.random.default_rng(0)
    lengths = [len(attacks.run(p, rng, "replay", paced=True)[0]) for _ in range(200)]
    assert min(lengths) >= 8  # two plays of a four-click session at least
    assert min(len(attacks.run(p, rng, "replay")[0]) for _ in range(200)) == 4  # re-timed, once is enough


def test_a_takeover_never_hits_a_labelled_attacker():
    log = paced_log()
    for e in log:
        e.label = 1 if int(e.user_id[4:]) % 2 else 0
    p = attacks.Platform.from_events(log)
    rng = np.random.default_rng(1)
    for n in range(60):
        own = [e for e in attacks.attacker(p, rng, "takeover", f"t{n}") if e.attack is None]
        assert own and all((e.ts - T0) // 3_600_000 % 2 == 0 for e in own)  # the victim's hour says who it was
