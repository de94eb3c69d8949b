"""The peer: the same job written the way a faust-streaming user would write it.

Agent + Table + ``stream.take``: a Table keyed by user holds each user's last 64 events
(decoded JSON dicts); every ``take`` batch updates the table, scores the windows that
changed, and sends an alert for each score at or above the threshold. Run as its own
process by bench/race.py:

    python -m bench.peers.faust_peer BOOTSTRAP TOPIC ALERTS N SCORER [MODEL_DIR] worker -l warn

It prints ``PEER first=<t> last=<t> events=<n> windows=<n>`` (monotonic seconds) when
it has processed N events.
"""

from __future__ import annotations

import sys
import tempfile
import time

import faust
import numpy as np
import orjson

WINDOW = 64


def main() -> None:
    bootstrap, topic, alerts_name, n_total, scorer_kind = sys.argv[1:6]
    model_dir = sys.argv[6] if scorer_kind == "model" else None
    del sys.argv[1:7 if model_dir else 6]
    n_total = int(n_total)
    app = faust.App(f"peer-{int(time.time())}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                    datadir=tempfile.mkdtemp(prefix="faust-peer-"),
                    value_serializer="raw", key_serializer="raw", broker_session_timeout=6.0,
                    broker_heartbeat_interval=0.5, consumer_auto_offset_reset="earliest", topic_partitions=4)
    events = app.topic(topic, key_type=bytes, value_type=bytes)
    alerts = app.topic(alerts_name, key_type=bytes, value_type=bytes)
    # use_partitioner: the documented way to update a Table from a take() batch (no single current event)
    windows = app.Table("windows", default=list, use_partitioner=True)

    if model_dir:
        from stream.encoding import encode
        from stream.model import Scorer
        from stream.windows import Windows

        scorer = Scorer.load(model_dir, "cpu")
        threshold = scorer.artifact.meta.threshold
        vocab = scorer.artifact.vocab
        type_ids: dict[str, int] = {}
        type_names: list[str] = []

        def score(ws: list[list[dict]]) -> np.ndarray:
            # the glue a Faust user writes to call the model: lists of dicts -> arrays -> tokens
            b = len(ws)
            ts = np.zeros((b, WINDOW), np.int64)
            ty = np.zeros((b, WINDOW), np.uint16)
            it = np.zeros((b, WINDOW), np.uint32)
            pr = np.full((b, WINDOW), np.nan, np.float32)
            for i, w in enumerate(ws):
                off = WINDOW - len(w)
                for j, e in enumerate(w):
                    ts[i, off + j] = e["ts"]
                    ty[i, off + j] = type_ids.setdefault(e["type"], len(type_ids))
                    if len(type_names) < len(type_ids):
                        type_names.append(e["type"])
                    it[i, off + j] = hash(e.get("item_id")) & 0xFFFFFFFF
                    if e.get("price") is not None:
                        pr[i, off + j] = e["price"]
            win = Windows([""] * b, ts, ty, it, pr, np.zeros((b, WINDOW), np.int8), np.array([len(w) for w in ws]))
            return scorer.score(encode(win, type_names, vocab))
    else:
        threshold = 0.9

        def score(ws: list[list[dict]]) -> np.ndarray:
            return np.array([len({e.get("item_id") for e in w}) / len(w) for w in ws])

    state = {"n": 0, "windows": 0, "first": None}

    @app.agent(events)
    async def detect(stream: faust.StreamT) -> None:
        async for values in stream.take(1000, within=0.02):
            if state["first"] is None:
                state["first"] = time.monotonic()
            changed: dict[str, list[dict]] = {}
            for v in values:
                ev = orjson.loads(v)
                w = windows[ev["user_id"]] + [ev]
                w = w[-WINDOW:]
                windows[ev["user_id"]] = w
                changed[ev["user_id"]] = w
            users = list(changed)
            scores = score([changed[u] for u in users])
            for u, s in zip(users, scores, strict=True):
                if s >= threshold:
                    await alerts.send(key=u.encode(), value=orjson.dumps({"user_id": u, "score": float(s)}))
            state["n"] += len(values)
            state["windows"] += len(users)
            if state["n"] >= n_total:
                print(f"PEER first={state['first']:.6f} last={time.monotonic():.6f} events={state['n']} "
                      f"windows={state['windows']}", flush=True)

    app.main()


if __name__ == "__main__":
    main()
