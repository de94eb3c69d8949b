"""Defaults of `seqsentry run`'s settings, in a module light enough for `run --help` to show them.

:class:`stream.runtime.config.ServiceConfig` takes its field defaults from here and the
`run`/`faust` help texts state them from here, so the two cannot disagree. The name of each
constant is its setting's name upper-cased. Settings without a constant default to None
(their help says what that means) or have no flag (``max_message_bytes``: stream.events).
"""

from __future__ import annotations

from pathlib import Path

TOPIC = "events"
ALERTS_TOPIC = "alerts"
DLQ_TOPIC = "events-dlq"
GROUP = "seqsentry"
OFFSET_RESET = "earliest"  # what a new consumer group reads first: the whole topic
REGISTRY = Path("registry")
DEVICE = "auto"
RUNTIME = "auto"
MAX_BATCH_SIZE = 256
MAX_WAIT_MS = 20.0
MAX_QUEUE_WINDOWS = 20_000
CONSUME_BATCH = 2_000
POLL_WAIT_MS = 5.0
COMMIT_INTERVAL_MS = 200.0
COOLDOWN_S = 600.0
COALESCE = False
MAX_CLOCK_SKEW_S = 3600.0
METRICS_HOST = "127.0.0.1"
METRICS_PORT = 9108
RELOAD_INTERVAL_S = 5.0
EXACTLY_ONCE = False
STALL_TIMEOUT_S = 120.0
ACK_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 60.0
EXPLAIN_TOP = 5
