"""Decoder race for the event contract: json vs orjson vs msgspec on one batch.

    python -m bench.parse [--events 200000]

Each contender turns the same payloads into validated events under the same contract:
json / orjson / msgspec decode to Python objects, then :func:`stream.events.validate_record`
checks them; "msgspec typed" decodes straight into the contract Struct
(:func:`stream.events.parse_event`, the hot path), checking types while decoding.
Writes bench/results/parse.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import msgspec
import orjson

from stream.events import Reject, parse_event, validate_record
from training.synth import generate


def _run(decode, payloads: list[bytes], validate: bool = True) -> float:
    t0 = time.perf_counter()
    for p in payloads:
        try:
            v = decode(p)
            if validate:
                validate_record(v)
        except (Reject, ValueError, msgspec.DecodeError):
            pass
    return len(payloads) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    payloads = [orjson.dumps(r) for chunk in generate(events=args.events, seed=0) for r in chunk]
    results = {}
    for _ in range(2):  # second pass is the measured one (warm caches)
        results = {
            "json + validate": _run(json.loads, payloads),
            "orjson + validate": _run(orjson.loads, payloads),
            "msgspec + validate": _run(msgspec.json.decode, payloads),
            "msgspec typed (parse_event)": _run(parse_event, payloads, False),
            "orjson decode only (no checks, reference)": _run(orjson.loads, payloads, False),
        }
    for k, v in results.items():
        print(f"{k:45s} {v:>12,.0f} events/s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "parse.json").write_text(json.dumps({"events": len(payloads), "events_per_s": results}, indent=2))


if __name__ == "__main__":
    main()
