"""The runtime around the data path: one module per job of `seqsentry run`.

    config.py     typed settings and their precedence (flags > SEQSENTRY_* > YAML > defaults)
    defaults.py   the settings' defaults, light enough for `run --help` (no pydantic)
    pipeline.py   the one step every runtime calls: parse -> dead letters -> ingest -> windows to score
    consumer.py   the consumer loop (consumer thread only): fetch, hand on, backpressure, observe
    commits.py    commit tickets, the completed-prefix commit and exactly-once transactions
    rebuild.py    partition state: window stores, rebuilt from the input topic on assignment
    outputs.py    alerts and dead letters to Kafka (one ``dead_letter_headers()`` for every runtime)
    reload.py     hot reload: watch the registry, load, hand the new model to the detector
    http.py       /metrics, /healthz, /readyz

``stream.service.Service`` wires them together; nothing here imports ``training``.
"""
