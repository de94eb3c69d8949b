"""What `seqsentry run` is made of: one module per job of the service.

    config.py     typed settings and their precedence (flags > SEQSENTRY_* > YAML > defaults)
    defaults.py   the settings' defaults, light enough for `run --help` (no pydantic)
    consumer.py   the consumer loop (consumer thread only): fetch, hand on, backpressure, observe
    commits.py    commit tickets, the completed-prefix commit and exactly-once transactions
    rebuild.py    partition state: window stores, rebuilt from the input topic on assignment
    outputs.py    alerts and dead letters to Kafka, each tied to its input's commit ticket
    broker_health.py  what the Kafka clients reported, and outputs still awaiting their acks
    gauges.py     lag, tracked users, readiness, GPU: computed when Prometheus scrapes
    reload.py     hot reload: watch the registry, load, hand the new model to the detector
    logloss.py    broker data loss: offsets that jump past what was committed
    http.py       /metrics, /healthz, /readyz

What `run`, `faust` and `score` share lives one floor down, in ``stream``: the pipeline step
(stream.pipeline), the dead-letter contract (stream.dead_letter), log rate limits
(stream.ratelimit) and the progress line (stream.progress_line). ``stream.service.Service``
wires this package together; nothing here imports ``training`` or ``stream.commands``.
"""
