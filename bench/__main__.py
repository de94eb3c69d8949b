"""Benchmark harness: ``python -m bench NAME [options]``.

    python -m bench race       # seqsentry vs the faust-streaming peer; ingest and model ceilings
    python -m bench latency    # event-to-alert latency at 25/50/75 % of max sustainable load
    python -m bench inference  # CPU inference variants (threads, int8, compile) with score agreement
    python -m bench scaleout   # 1 vs 2 consumer processes on a 4-partition topic
    python -m bench parse      # event decoder race
    python -m bench memory     # bytes per tracked user
    python -m bench quality    # detection quality vs baselines
    python -m bench realdata   # detection on real labelled HDFS sessions vs lookup baselines
    python -m bench ecommerce  # real clickstreams + an independent attack generator vs IsolationForest, rate rule
    python -m bench zerolabel  # zero-label serving cost vs the classifier's, same windows
    python -m bench soak       # 10 minutes at 50 % load: RSS, lag and latency over time
    python -m bench crash      # kill -9 five times during a 200k-event replay: lost / repeated
    python -m bench faults     # hostile input and faults (1 MB message, future-dated event, secrets, ...)

Each writes JSON to bench/results/ and, where there is something to look at, a PNG.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"race": "bench.race", "latency": "bench.latency", "inference": "bench.inference",
            "scaleout": "bench.scaleout", "parse": "bench.parse", "memory": "bench.memory", "quality": "bench.quality", "realdata": "bench.realdata",
            "ecommerce": "bench.ecommerce", "zerolabel": "bench.zerolabel",
            "soak": "bench.soak", "crash": "bench.crash", "faults": "bench.faults", "report": "bench.report"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    name = sys.argv.pop(1)
    sys.exit(importlib.import_module(COMMANDS[name]).main())


if __name__ == "__main__":
    main()
