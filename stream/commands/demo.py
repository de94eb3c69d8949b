"""`seqsentry demo`: the whole product in one command.

Embedded broker (or --bootstrap) -> topics -> a model (trained on generated traffic when
the registry has none) -> the live detector -> generated traffic with injected attacks
replayed at a chosen rate -> alerts shown live -> a summary scored against the injected
ground truth. Ctrl-C at any moment shuts everything down cleanly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import OFFSET_END, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream import kafka, logs, registry, replay
from stream.broker import EmbeddedBroker, create_topics
from stream.runtime import defaults
from stream.service import Service, ServiceConfig

SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}


@dataclass
class DemoConfig:
    events: int = 20_000
    rate: float | None = 2_000.0  # events/s; None = as fast as possible
    seed: int = 42
    train_events: int | None = None  # None: training.train.STARTER_EVENTS
    attacker_fraction: float = 0.05
    registry: Path = Path("registry")
    out: Path = Path("runs/demo")
    bootstrap: str | None = None
    kafka_options: dict = field(default_factory=dict)
    metrics_port: int = 9108
    device: str = "auto"
    live: bool = True


@dataclass
class DemoSummary:
    events_replayed: int
    events_consumed: int
    events_rejected: int
    windows_scored: int
    alerts: int
    alerts_by_severity: dict
    attackers: int
    attackers_alerted: int
    normal_users: int
    normal_users_alerted: int
    user_precision: float
    user_recall: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    model_version: str
    seconds: float
    out_dir: str
    training_report: str | None


def _train(cfg: DemoConfig, console: Console) -> str | None:
    from training.train import STARTER_EVENTS, train_on_generated

    events = cfg.train_events or STARTER_EVENTS
    console.print(f"[bold]No model in {cfg.registry}[/]: training one on {events:,} generated events "
                  "(self-supervised pretraining, then fine-tuning) ...")
    res = train_on_generated(cfg.registry, events=events, seed=cfg.seed + 1,
                             attacker_fraction=cfg.attacker_fraction, device=cfg.device, out=cfg.out / "runs",
                             show=cfg.live)
    t = res.report.get("transformer")
    if t:
        u = t["users"]
        console.print(f"trained [bold]{res.version}[/] in {res.seconds:.0f}s: on held-out test users "
                      f"{u['detected']}/{u['attackers']} attackers caught, {u['precision']:.1%} of alerted users are "
                      f"attackers, {u['normal_user_alert_rate']:.2%} of normal users alerted (window PR-AUC "
                      f"{t['pr_auc']:.3f})")
    return str(res.report_dir / "report.md") if t else None


def _alert_table(alerts: deque, counts: dict) -> Table:
    table = Table(title=f"seqsentry demo — {counts['replayed']:,} events sent, {counts['consumed']:,} consumed, "
                        f"{counts['alerts']:,} alerts", expand=True)
    for col in ("event time", "user", "severity", "score", "what drove it"):
        table.add_column(col)
    for a in list(alerts)[-12:]:
        why = ", ".join(f"{e['type']}" for e in a["explanation"][:3])
        table.add_row(time.strftime("%H:%M:%S", time.gmtime(a["event_time"] / 1000)), a["user_id"],
                      f"[{SEVERITY_STYLE[a['severity']]}]{a['severity']}[/]", f"{a['score']:.3f}", why)
    return table


def run_demo(cfg: DemoConfig, console: Console | None = None) -> DemoSummary:
    """Run the demo end to end; returns the summary (also written to OUT/summary.json)."""
    from training import synth

    console = console or Console()
    t0 = time.monotonic()
    cfg.out.mkdir(parents=True, exist_ok=True)
    broker = None
    stop = threading.Event()
    svc: Service | None = None
    runner: threading.Thread | None = None
    sender: threading.Thread | None = None
    tail = None
    try:
        bootstrap = cfg.bootstrap
        if bootstrap is None:
            broker = EmbeddedBroker().start()
            bootstrap = broker.bootstrap
            console.print(f"embedded Kafka-compatible broker on [bold]{bootstrap}[/] (in-memory)")
        else:
            kafka.check_reachable(bootstrap, cfg.kafka_options)
        topics = {defaults.TOPIC: 4, defaults.ALERTS_TOPIC: 4, defaults.DLQ_TOPIC: 1}
        create_topics(bootstrap, topics, **cfg.kafka_options)
        training_report = None
        if registry.current_version(cfg.registry) is None:
            training_report = _train(cfg, console)
        traffic = cfg.out / "traffic.jsonl.gz"
        records = synth.generate_list(events=cfg.events, seed=cfg.seed, attacker_fraction=cfg.attacker_fraction)
        logs.write_log(traffic, [records])
        attackers = {r["user_id"] for r in records if r["label"] == 1}
        normals = {r["user_id"] for r in records} - attackers

        svc = Service(ServiceConfig(bootstrap=bootstrap, registry=cfg.registry, metrics_port=cfg.metrics_port,
                                    group=f"seqsentry-demo-{int(time.time())}", kafka_options=cfg.kafka_options,
                                    device=cfg.device))
        svc.setup()
        console.print(f"detector serving [bold]{svc.serving_version}[/]; metrics at {svc.metrics_url}/metrics")
        runner = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
        runner.start()

        alerts: deque = deque(maxlen=100_000)
        tail = kafka.consumer(bootstrap, f"demo-tail-{time.time()}", cfg.kafka_options)
        parts = kafka.require_topic(bootstrap, defaults.ALERTS_TOPIC, cfg.kafka_options)
        tail.assign([TopicPartition(defaults.ALERTS_TOPIC, p, OFFSET_END) for p in range(parts)])

        sent = {"n": 0}

        def produce() -> None:
            stats = replay.replay(traffic, bootstrap, defaults.TOPIC, rate=cfg.rate, options=cfg.kafka_options, stop=stop)
            sent["n"] = stats.sent

        sender = threading.Thread(target=produce, daemon=True)
        sender.start()
        counts = {"replayed": 0, "consumed": 0, "alerts": 0}
        with Live(_alert_table(alerts, counts), console=console, refresh_per_second=4, transient=not cfg.live) as live:
            while True:
                for m in tail.consume(500, timeout=0.25):
                    if not m.error():
                        alerts.append(orjson.loads(m.value()))
                progress = svc.progress()
                counts.update(replayed=sent["n"] or progress.consumed, consumed=progress.consumed, alerts=len(alerts))
                live.update(_alert_table(alerts, counts))
                done = not sender.is_alive() and counts["consumed"] >= sent["n"] and progress.idle
                if done:
                    for m in tail.consume(1000, timeout=1.0):  # the last acks
                        if not m.error():
                            alerts.append(orjson.loads(m.value()))
                    break
                if svc.worker.error is not None or not runner.is_alive():
                    raise RuntimeError(f"detector stopped: {svc.worker.error}")
        tail.close()
        tail = None
        svc.stop()
        runner.join(30)
        alerted = {a["user_id"] for a in alerts}
        lat = np.array([x for _, x in svc.latencies]) if svc.latencies else None
        counts = svc.metrics.tally.counts()
        summary = DemoSummary(
            events_replayed=sent["n"], events_consumed=counts.consumed, events_rejected=counts.rejected,
            windows_scored=counts.scored, alerts=len(alerts),
            alerts_by_severity=dict(Counter(a["severity"] for a in alerts)), attackers=len(attackers),
            attackers_alerted=len(alerted & attackers), normal_users=len(normals),
            normal_users_alerted=len(alerted & normals),
            user_precision=len(alerted & attackers) / max(len(alerted), 1),
            user_recall=len(alerted & attackers) / max(len(attackers), 1),
            latency_p50_s=float(np.percentile(lat, 50)) if lat is not None else None,
            latency_p99_s=float(np.percentile(lat, 99)) if lat is not None else None,
            model_version=svc.serving_version or "", seconds=time.monotonic() - t0, out_dir=str(cfg.out),
            training_report=training_report)
        (cfg.out / "alerts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
        (cfg.out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
        if lat is not None:
            _latency_plot(lat, cfg.out / "latency.png")
        _print_summary(console, summary)
        return summary
    except KeyboardInterrupt:
        console.print("stopping: replay, then the detector (finishing in-flight windows, flushing alerts, "
                      "committing), then the broker ...")
        raise
    finally:
        # in order, each waited for: a client still polling a stopped broker floods the log
        # with connection errors and can die inside librdkafka at interpreter exit
        stop.set()
        if sender is not None:
            sender.join(10)
        if svc is not None:
            svc.stop()
            if runner is not None:
                runner.join(30)
        if tail is not None:
            tail.close()
        if broker is not None:
            broker.stop()


def _latency_plot(lat: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(lat * 1000, bins=50)
    for q, style in ((50, "--"), (99, ":")):
        ax.axvline(np.percentile(lat, q) * 1000, color="k", ls=style, label=f"p{q} {np.percentile(lat, q) * 1000:.0f} ms")
    ax.set(xlabel="event-to-alert latency (ms)", ylabel="alerts", title="seqsentry demo: event-to-alert latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_summary(console: Console, s: DemoSummary) -> None:
    t = Table(title="seqsentry demo summary", show_header=False)
    t.add_row("attackers alerted (recall)", f"{s.attackers_alerted}/{s.attackers} ({s.user_recall:.1%})")
    t.add_row("alerted users who are attackers (precision)", f"{s.user_precision:.1%}")
    t.add_row("normal users alerted", f"{s.normal_users_alerted}/{s.normal_users}")
    by_severity = ", ".join(f"{n:,} {sev}" for sev in SEVERITY_STYLE if (n := s.alerts_by_severity.get(sev)))
    t.add_row("alerts", f"{s.alerts:,}" + (f" ({by_severity})" if by_severity else ""))
    t.add_row("events replayed / consumed / rejected", f"{s.events_replayed:,} / {s.events_consumed:,} / {s.events_rejected:,}")
    t.add_row("windows scored", f"{s.windows_scored:,}")
    if s.latency_p50_s is not None:
        t.add_row("event-to-alert latency p50 / p99", f"{s.latency_p50_s * 1000:.0f} ms / {s.latency_p99_s * 1000:.0f} ms")
    t.add_row("model", s.model_version)
    t.add_row("written to", f"{s.out_dir}/ (summary.json, alerts.jsonl, latency.png, traffic.jsonl.gz)")
    if s.training_report:
        t.add_row("training report", s.training_report)
    console.print(t)
