"""The benchmark's attack generators (bench/attackgen.py, and the held-out bench/attackgen_blind.py where
they share a promise): seeded, on the platform's own items and types, takeovers under the victim's id,
human timing varied and machine timing regular."""

from __future__ import annotations

import numpy as np
import pytest

from bench import attackgen, attackgen_blind

GENERATORS = [attackgen, attackgen_blind]

T0 = 1_700_000_000_000


def _normal_log(seed: int = 1, users: int = 60) -> dict[str, list[tuple[int, str, str]]]:
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        t = T0 + int(rng.integers(0, 86_400_000))
        evs = []
        for _ in range(int(rng.integers(3, 12))):
            t += int(rng.lognormal(np.log(20_000), 1.0))
            evs.append((t, "view", f"{int(rng.integers(100, 140))}"))
        out[str(1000 + u)] = evs
    return out


def _platform(buy: bool) -> attackgen.Platform:
    items = [str(i) for i in range(100, 140)]
    w = np.linspace(1, 3, len(items))
    return attackgen.Platform(items, w / w.sum(), view="view", cart="cart" if buy else None,
                              buy="buy" if buy else None)


def _gen(seed: int = 3, buy: bool = False, per_kind: int = 6, gen=attackgen):
    normal = _normal_log()
    return normal, *gen.generate(normal, _platform(buy), T0, T0 + 2 * 86_400_000, per_kind=per_kind,
                                       seed=seed)


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: g.__name__)
def test_deterministic_in_seed(gen) -> None:
    _, a1, t1 = _gen(seed=5, gen=gen)
    _, a2, t2 = _gen(seed=5, gen=gen)
    _, a3, _ = _gen(seed=6, gen=gen)
    assert a1 == a2 and [x.to_json() for x in t1] == [x.to_json() for x in t2]
    assert a1 != a3


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: g.__name__)
@pytest.mark.parametrize("buy", [False, True])
def test_only_the_platforms_items_and_types(buy: bool, gen) -> None:
    _, evs, truth = _gen(buy=buy, gen=gen)
    p = _platform(buy)
    assert {e["item_id"] for e in evs} <= set(p.items)
    assert {e["type"] for e in evs} <= p.types
    assert buy == ("buy" in {e["type"] for e in evs})  # a click-only platform gets no orders
    assert {a.kind for a in truth} == set(gen.KINDS)
    assert all(e["ts"] >= T0 for e in evs)


def test_takeover_keeps_the_victims_id() -> None:
    normal, evs, truth = _gen()
    takeovers = [a for a in truth if a.kind == "takeover"]
    assert takeovers and all(a.victim and a.user_id in normal for a in takeovers)
    fresh = [a for a in truth if a.kind != "takeover"]
    assert not {a.user_id for a in fresh} & set(normal)  # every other attacker is a new account
    assert len({a.user_id for a in truth}) == len(truth)
    for a in takeovers:
        own = [e for e in evs if e["user_id"] == a.user_id]
        assert len(own) == len(a.attack_ts) and min(a.attack_ts) >= normal[a.user_id][0][0]


def test_human_timing_varies_machine_timing_is_regular() -> None:
    _, _, truth = _gen(per_kind=10)
    for a in truth:
        g = np.diff(np.sort(a.attack_ts)).astype(float)
        if len(g) < 3:
            continue
        if a.timing == "human":
            assert g.std() / g.mean() > 0.3, (a.kind, g[:10])
        else:  # most gaps within 5 % of the attacker's median gap (bursts and orders pause between runs)
            assert (np.abs(g / np.median(g) - 1) < 0.05).mean() >= 0.6, (a.kind, g[:10])


def test_the_blind_generator_makes_new_accounts_inside_the_period_each_run_one_session() -> None:
    normal, evs, truth = _gen(per_kind=6, gen=attackgen_blind)
    assert len(truth) == 6 * len(attackgen_blind.KINDS) and len({a.user_id for a in truth}) == len(truth)
    assert all((a.user_id in normal) == a.victim for a in truth)  # only takeovers use a real user's id
    assert all(T0 <= e["ts"] <= T0 + 2 * 86_400_000 for e in evs)
    assert sum(len(a.attack_ts) for a in truth) == len(evs)
    assert max(np.diff(np.sort(a.attack_ts)).max(initial=0) for a in truth) < attackgen.MAX_GAP_MS
