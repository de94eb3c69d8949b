"""kill -9 the detector at random points during a replay; count what was lost or repeated.

    python -m bench crash [--events 200000] [--kills 5] [--mode at-least-once|exactly-once]

The log (generated traffic with all attack kinds, all valid) is replayed into a 4-partition topic;
``seqsentry run`` is started as a subprocess and SIGKILLed once it has scored a random share
of the log (``kill_after``, a fraction of the events; progress, not time, so the kills strike
mid-stream on a fast machine as on a slow one), ``kills`` times; then it is started once
more and left to finish. Every scored event's (partition, offset)
goes to an audit file, flushed before a commit can cover it. Checked afterwards: every
offset committed; no committed offset missing from the audit; every user an
uninterrupted offline run alerts on still alerted; the alert ids published against the offline
run's (extra, missing); duplicates counted. Writes
bench/results/crash-MODE.json. ``tests/test_reliability.py`` runs the same harness small.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream import progress, replay
from stream.broker import EmbeddedBroker, create_topics, free_port

SEQSENTRY = [sys.executable, "-m", "stream.cli"]
SETTLE_S = 5.0  # exactly-once: every event scored and no commit for this long: the run is over


@dataclass
class CrashResult:
    """What one crash run found."""

    mode: str
    events: int
    kills: int
    committed_at_kills: list[int]  # offsets committed in all when each kill struck
    committed: int
    committed_but_unscored: int
    scored_events: int  # distinct offsets scored over all incarnations
    rescored_events: int  # scored more than once (the replay after each kill)
    alerts: int
    duplicate_alerts: int
    offline_alerted_users: int
    users_missed: int
    extra_alert_ids: int  # published, yet never produced by an uninterrupted offline run of the log
    missing_alert_ids: int  # produced offline, never published
    seconds: float

    @property
    def lost(self) -> int:
        return (self.events - self.committed) + self.committed_but_unscored


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """The group's committed offset per partition (0 when none)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: max(tp.offset, 0)
                for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, partitions: int = 4, idle: float = 3.0) -> list[bytes]:
    """Every committed record of ``topic`` (read_committed), until ``idle`` seconds pass without one."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"crash-reader-{time.monotonic_ns()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, last = [], time.monotonic()
    while time.monotonic() - last < idle:
        for m in c.consume(5000, timeout=0.2):
            if not m.error():
                out.append(m.value())
                last = time.monotonic()
    c.close()
    return out


def crash_run(bootstrap: str, model: Path, log: Path, workdir: Path, *, kills: int = 5,
              mode: str = "at-least-once", seed: int = 7, kill_after: tuple[float, float] = (0.02, 0.1),
              offline_alerts: list[dict] | None = None, timeout: float = 1800, show: bool = False,
              run_args: tuple[str, ...] = ()) -> CrashResult:
    """Replay all of ``log`` (valid events only), kill the detector ``kills`` times, let it finish, and check.

    ``run_args`` go to every ``seqsentry run``."""
    from stream.detector import Detector
    from stream.model import Scorer
    from stream.offline import score_log

    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{mode}-{time.monotonic_ns()}"
    topic, alerts_topic, dlq, group = f"crash-ev-{tag}", f"crash-al-{tag}", f"crash-dlq-{tag}", f"crash-{tag}"
    create_topics(bootstrap, {topic: 4, alerts_topic: 4, dlq: 1})
    events = replay.replay(log, bootstrap, topic).sent
    if offline_alerts is None:  # what an uninterrupted run alerts on: the offline pipeline over the same log
        score_log(log, Detector(Scorer.load(model, "cpu")), workdir / "offline.jsonl")
        offline_alerts = [orjson.loads(x) for x in (workdir / "offline.jsonl").read_bytes().splitlines()]
    audit = workdir / f"audit-{tag}.txt"
    cmd = [*SEQSENTRY, "run", "-b", bootstrap, "--model", str(model), "--topic", topic, "--alerts-topic",
           alerts_topic, "--dlq-topic", dlq, "--group", group, "--audit-log", str(audit), "--device", "cpu", *run_args]
    if mode == "exactly-once":  # the same id on every restart: each incarnation fences its killed predecessor
        cmd += ["--exactly-once", "--transactional-id", f"crash-{tag}"]
        # The events topic is written without transactions, so read_uncommitted reads exactly its records.
        # librdkafka's default (read_committed) stalls on the embedded broker after a kill: Tansu never
        # aborts the killed incarnation's open transaction, and its fetch then held events partitions back
        # (seen here: partitions 0-2 not consumed for minutes while 3 was). Kafka aborts it at init_transactions.
        cmd += ["-X", "isolation.level=read_uncommitted"]
    rng = random.Random(seed)
    at_kills: list[int] = []
    t0 = time.monotonic()
    with progress.bar(show) as bar:
        task = bar.add_task(f"kill -9 x{kills} ({mode})", total=events, rate="")

        def start() -> subprocess.Popen:
            # each incarnation's stderr is kept beside the audit log: a run that does not finish says why
            err = (workdir / f"run-{tag}-{len(at_kills)}.stderr").open("wb")
            return subprocess.Popen([*cmd, "--metrics-port", str(free_port())], stdout=subprocess.DEVNULL,
                                    stderr=err)

        def done() -> int:
            n = sum(committed_offsets(bootstrap, group, topic).values())
            bar.update(task, completed=n)
            return n

        settled = {"at": time.monotonic(), "committed": -1}

        def finished() -> bool:
            """Every event committed; exactly-once on the embedded broker: every event scored and the
            commits settled. Tansu drops the offsets of a transaction that wrote no record (an
            offsets-only transaction, e.g. the last one, with no alert in it; Kafka commits them), so
            there the last offsets may never show: what is checked is that nothing unscored is committed."""
            n = done()
            if n >= events:
                return True
            if n != settled["committed"]:
                settled.update(at=time.monotonic(), committed=n)
            with audit.open("rb") as fh:
                scored = len(set(fh.read().splitlines()))
            return mode == "exactly-once" and scored >= events and time.monotonic() - settled["at"] > SETTLE_S

        audit.touch()
        for k in range(kills):
            proc = start()
            target = max(1, int(rng.uniform(*kill_after) * events))
            deadline, seen, checked = time.monotonic() + 120, 0, time.monotonic()
            with audit.open("rb") as fh:
                fh.seek(0, 2)  # only what this incarnation scores counts towards its kill point
                while seen < target and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.002)
                    seen += fh.read().count(b"\n")
                    if time.monotonic() - checked > 1.0:  # nothing left to score: the kill lands idle
                        if done() >= events:
                            break
                        checked = time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"detector exited (code {proc.returncode}) before kill {k + 1}; see {audit}")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            at_kills.append(done())
            bar.update(task, rate=f"{k + 1} kills")
        proc = start()
        try:
            while not finished():
                if time.monotonic() - t0 > timeout or proc.poll() is not None:
                    raise RuntimeError(f"final run did not finish (exit {proc.poll()}); see {audit} and run-{tag}-*.stderr")
                time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    seconds = time.monotonic() - t0
    offsets = committed_offsets(bootstrap, group, topic)
    scored_lines = audit.read_text().splitlines()
    scored = {tuple(map(int, line.split())) for line in scored_lines}
    unscored = sum(1 for part, upto in offsets.items() for o in range(upto) if (part, o) not in scored)
    alerts = [orjson.loads(v) for v in read_all(bootstrap, alerts_topic)]
    ids = [a["alert_id"] for a in alerts]
    expected_users = {a["user_id"] for a in offline_alerts}
    expected_ids = {a["alert_id"] for a in offline_alerts}
    return CrashResult(mode=mode, events=events, kills=kills, committed_at_kills=at_kills,
                       committed=sum(offsets.values()),
                       committed_but_unscored=unscored, scored_events=len(scored),
                       rescored_events=len(scored_lines) - len(scored), alerts=len(ids),
                       duplicate_alerts=len(ids) - len(set(ids)), offline_alerted_users=len(expected_users),
                       users_missed=len(expected_users - {a["user_id"] for a in alerts}),
                       extra_alert_ids=len(set(ids) - expected_ids), missing_alert_ids=len(expected_ids - set(ids)),
                       seconds=seconds)


def main() -> None:
    from bench.common import ensure_log, ensure_model, save

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--mode", choices=["at-least-once", "exactly-once"], default="at-least-once")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    model = ensure_model()
    log = ensure_log(args.events, seed=11)
    with EmbeddedBroker() as broker:
        res = crash_run(broker.bootstrap, model, log, Path("runs/bench/crash"), kills=args.kills,
                        mode=args.mode, seed=args.seed, show=True)
    out = {"command": f"python -m bench crash --events {args.events} --kills {args.kills} --mode {args.mode}",
           **asdict(res), "events_lost": res.lost}
    save(f"crash-{args.mode}", out)
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
