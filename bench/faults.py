"""``python -m bench faults``: hostile input and faults against the embedded broker (issue 14).

Each scenario runs the real detector (``stream.service.Service``) or the real client code
against a fresh embedded broker and records what happened; the results go to
bench/results/faults.json and replace the fault rows of docs/reliability.md (between the
``faults:begin``/``faults:end`` markers). A tiny model is trained first (seconds): the
scenarios test the runtime, not detection quality. Budget: under 3 minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import sample, save
from bench.crash import committed_offsets
from bench.fault_harness import BEGIN, DOC, END, Running, tiny_registry
from stream.broker import EmbeddedBroker
from stream.service import ServiceConfig


def oversized(broker: EmbeddedBroker, reg: Path) -> dict:
    """A 999,900-byte message, then 20 valid events: dead-lettered truncated; the stream goes on and commits."""
    run = Running(broker, reg)
    huge = b"{" + b"x" * 999_899
    now = int(time.time() * 1000)
    run.produce([(huge, b"u1")] + [(orjson.dumps({"user_id": "u1", "ts": now + i, "type": "view"}), b"u1")
                                   for i in range(20)])
    settled = run.settle(21)
    run.stop()
    [dead] = run.dead_letters() or [None]
    headers = dict(dead.headers() or []) if dead is not None else {}
    return {"settled": settled, "crashed": repr(run.error) if run.error else None,
            "committed": committed_offsets(broker.bootstrap, run.cfg.group, run.topics["topic"], 1)[0],
            "dead_letter_bytes": len(dead.value()) if dead is not None else None,
            "truncated": headers.get("seqsentry.truncated", b"").decode(),
            "original_size": int(headers.get("seqsentry.original-size", b"0")),
            "sha256_matches": headers.get("seqsentry.original-sha256", b"").decode() == hashlib.sha256(huge).hexdigest()}


def future_dated(broker: EmbeddedBroker, reg: Path) -> dict:
    """One event dated 2099 among 50 users' events: dead-lettered; its user's later events scored; nobody evicted."""
    run = Running(broker, reg)
    now = int(time.time() * 1000)
    values = [(orjson.dumps({"user_id": f"u{i}", "ts": now, "type": "view"}), f"u{i}".encode()) for i in range(50)]
    values.append((orjson.dumps({"user_id": "u0", "ts": 4_102_358_400_000 - 1, "type": "view"}), b"u0"))
    values += [(orjson.dumps({"user_id": "u0", "ts": now + 1 + i, "type": "view"}), b"u0") for i in range(10)]
    run.produce(values)
    settled = run.settle(len(values))
    time.sleep(1.2)  # one observation: tracked users
    m = run.svc.metrics
    out = {"settled": settled, "events": len(values),
           "bad_timestamp": int(sample(m, "seqsentry_events_rejected_total", {"reason": "bad-timestamp"})),
           "too_late": int(sample(m, "seqsentry_events_late_total")),
           "windows_scored": int(sample(m, "seqsentry_windows_scored_total")),
           "tracked_users": int(sample(m, "seqsentry_tracked_users"))}
    run.stop()
    return out


def refused_version(reg: Path, tmp: Path) -> dict:
    """``current`` pointing at a version not yet published: refused, then loaded once published."""
    from stream import registry
    from stream.detector import Detector
    from stream.metrics import Metrics
    from stream.model import Scorer
    from stream.runtime.reload import RegistryWatcher

    copy = tmp / "reg2"
    src = registry.current(reg).resolve()
    registry.publish(copy, src, "v1")
    serving = ["v1"]
    det = Detector(Scorer.load(registry.current(copy), "cpu"))
    watcher = RegistryWatcher(ServiceConfig(bootstrap="unused:9092", registry=copy, device="cpu"), det, Metrics(),
                              serving_version=lambda: serving[-1], on_swapped=serving.append)
    (copy / "current").unlink()
    os.symlink("versions/v2", copy / "current")
    watcher.check()
    refused = serving[-1] == "v1" and "v2" in watcher.bad_versions
    registry.publish(copy, src, "v2", make_current=False)
    watcher.check()
    det.score([])
    return {"refused_while_missing": refused, "loaded_once_published": serving[-1] == "v2"}


def secrets(tmp: Path) -> dict:
    """``-X sasl.jaas.config=...`` and a malformed ``-X``: one line each, no traceback, no secret."""
    out = {}
    for name, option in (("jaas", 'sasl.jaas.config=PlainLoginModule required password="hunter2-secret";'),
                         ("malformed", "hunter2-secret")):
        p = subprocess.run([sys.executable, "-m", "stream.cli", "run", "-b", "127.0.0.1:1", "--registry", str(tmp),
                            "-X", option, "--startup-timeout-s", "0"], capture_output=True, text=True, timeout=60)
        out[name] = {"exit": p.returncode, "stderr_lines": len(p.stderr.strip().splitlines()),
                     "traceback": "Traceback" in p.stderr, "secret_shown": "hunter2" in p.stdout + p.stderr}
    return out


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (without blocking)."""
    try:
        return s.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: the server aborted it
        return True


def http_limits(slow: int = 16, silent: int = 100) -> dict:
    """``slow`` clients sending one header byte a second and ``silent`` idle connections against the probe
    server (issue 20, item 4): every probe must answer within 1 s, each slow request be cut at the deadline."""
    import urllib.request

    from prometheus_client import CollectorRegistry

    from stream.runtime import http

    server = http.serve("127.0.0.1", 0, CollectorRegistry(), healthy=lambda: True, ready=lambda: True)
    t0 = time.monotonic()
    idle = [socket.create_connection(server.server_address[:2]) for _ in range(silent)]  # past the cap: oldest go
    trickling = [socket.create_connection(server.server_address[:2]) for _ in range(slow)]
    dropped_after: dict[int, float] = {}
    answered = probes = 0
    most_open = 0
    try:
        while time.monotonic() - t0 < http.REQUEST_DEADLINE_S + 2:
            for i, s in enumerate(trickling):
                if i not in dropped_after and _closed_by_server(s):
                    dropped_after[i] = time.monotonic() - t0
                elif i not in dropped_after:
                    s.send(b"G")  # one byte of a request head: a per-recv timeout never fires
            for _ in range(4):
                probes += 1
                with contextlib.suppress(OSError):  # a probe that failed in time
                    answered += urllib.request.urlopen(http.url(server) + "/healthz", timeout=1).status == 200
                most_open = max(most_open, server.open_connections)
                time.sleep(0.25)
    finally:
        for s in trickling + idle:
            s.close()
        http.shutdown(server)
    return {"slow_clients": slow, "silent_connections": silent, "probes": probes, "probes_answered": answered,
            "slow_dropped": len(dropped_after), "slow_dropped_after_s_max": max(dropped_after.values(), default=None),
            "request_deadline_s": http.REQUEST_DEADLINE_S, "max_connections": http.MAX_CONNECTIONS,
            "open_connections_max": most_open}


class _Lines(logging.Handler):
    """Collects the messages of the log records that contain ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.lines.append(record.getMessage())


def _events(n: int, garbage: int) -> list[tuple[bytes, bytes]]:
    """``n`` valid events of 30 users dated now, then ``garbage`` messages that must be dead-lettered."""
    now = int(time.time() * 1000)
    valid = [(orjson.dumps({"user_id": f"u{i % 30}", "ts": now + i, "type": "view"}), f"u{i % 30}".encode())
             for i in range(n)]
    return valid + [(b"not json %d" % i, b"g") for i in range(garbage)]


def broker_lost_data(reg: Path, ack_timeout_s: float = 2.0, message_timeout_s: float = 15.0,
                     watch_s: float = 60.0) -> dict:
    """A broker restarted empty under a running detector (issue 20, item 3): only the input topic is created
    again, and what is consumed next leaves outputs unacknowledged (here Tansu never acknowledges the dead
    letters to the topic it auto-creates). ``/readyz`` must fail within ``ack_timeout_s`` of the oldest
    unacknowledged output, the lost data be named in one line, and the detector stop once librdkafka gives
    up (``message.timeout.ms``, shortened from its 300 s to keep the run short)."""
    lines = _Lines("broker lost data")
    logging.getLogger("stream.runtime.broker_health").addHandler(lines)
    with EmbeddedBroker() as own:  # its own broker: this one is restarted
        run = Running(own, reg, ack_timeout_s=ack_timeout_s,
                      kafka_options={"message.timeout.ms": int(message_timeout_s * 1000)})
        run.produce(_events(300, 5))
        settled = run.settle(305)
        own.stop()
        restarted_at = time.monotonic()
        own.start()
        own.create_topics({run.topics["topic"]: 1})
        run.produce(_events(300, 10))
        samples = []  # (seconds since the restart, ready, outputs waiting, oldest wait)
        while time.monotonic() - restarted_at < watch_s and run.error is None:
            out = run.svc.outputs.unacked
            samples.append((time.monotonic() - restarted_at, run.svc.ready, len(out), out.oldest_age()))
            time.sleep(0.1)
        run.stop()
    logging.getLogger("stream.runtime.broker_health").removeHandler(lines)
    waiting = [x for x in samples if x[2]]
    wait_from = (waiting[0][0] - waiting[0][3]) if waiting else None
    failed = next((t for t, ready, n, _ in samples if n and not ready), None)
    return {"settled_before": settled, "outputs_waiting_max": max((x[2] for x in samples), default=0),
            "ack_timeout_s": ack_timeout_s, "max_wait_while_ready_s": max((x[3] for x in samples if x[1]), default=0.0),
            "ready_false_after_wait_s": failed - wait_from if failed is not None and wait_from is not None else None,
            "loss_lines": len(lines.lines), "loss_line": lines.lines[0][:300] if lines.lines else None,
            "message_timeout_s": message_timeout_s, "watched_s": samples[-1][0] if samples else 0.0,
            "stopped_with": str(run.error)[:200] if run.error else None}


def refused_load_rss_mb(artifact: Path) -> tuple[float, str]:
    """Load ``artifact`` in a fresh process: how much its peak RSS grew over the load (MB), and the refusal."""
    code = (
        "import json, resource, sys\n"
        "from stream.artifact import ArtifactError, load_artifact\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    load_artifact(sys.argv[1]); error = ''\n"
        "except ArtifactError as exc:\n    error = str(exc)\n"
        "print(json.dumps([(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, error]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(artifact)], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    growth, error = orjson.loads(out.strip().splitlines()[-1])
    return growth, error


def huge_config(reg: Path, tmp: Path) -> dict:
    """An artifact whose config is inside every dimension limit but asks for ~300M parameters (1.2 GB), with
    its checksums recomputed and the small weights kept (issue 20, item 6): refused before allocating."""
    import json
    import shutil

    from stream import registry
    from stream.artifact import file_sha256
    from tests.artifacts import reseal

    art = tmp / "huge-config"
    shutil.copytree(registry.current(reg).resolve(), art)
    dims = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
    (art / "config.json").write_text(json.dumps({**json.loads((art / "config.json").read_text()), **dims}))
    meta = json.loads((art / "meta.json").read_text())
    meta["checksums"]["config.json"] = file_sha256(art / "config.json")
    (art / "meta.json").write_text(json.dumps(meta))
    reseal(art)
    growth, error = refused_load_rss_mb(art)
    return {"config": dims, "refused": bool(error), "error": error[-160:], "rss_growth_mb": round(growth, 1)}


def wrong_type_secret(tmp: Path) -> dict:
    """``sasl.password`` given as a list in the YAML file and as a mapping in SEQSENTRY_KAFKA_OPTIONS."""
    cfg = tmp / "secret.yaml"
    cfg.write_text('bootstrap: 127.0.0.1:1\nkafka_options: {sasl.password: ["hunter2-secret"]}\n')
    out = {}
    for name, args, env in (("yaml", ["--config", str(cfg)], {}),
                            ("env", ["-b", "127.0.0.1:1"],
                             {"SEQSENTRY_KAFKA_OPTIONS": '{"sasl.password": {"v": "hunter2-secret"}}'})):
        p = subprocess.run([sys.executable, "-m", "stream.cli", "run", "--registry", str(tmp), *args],
                           capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        out[name] = {"exit": p.returncode, "stderr_lines": len(p.stderr.strip().splitlines()),
                     "secret_shown": "hunter2" in p.stdout + p.stderr}
    return out


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def broker_killed() -> dict:
    """``seqsentry broker`` killed with -9 (issue 20, item 6): its broker child must die and free the port."""
    from stream.broker import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--port", str(port), "--partitions", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    children: list[int] = []
    try:
        import select

        serving = bool(select.select([proc.stdout], [], [], 90)[0]) and "embedded broker on" in proc.stdout.readline()
        children = _children(proc.pid)
        held_before = not _port_free(port)
        proc.kill()
        proc.wait(10)
        t0 = time.monotonic()
        while not _port_free(port) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        freed_after = time.monotonic() - t0 if _port_free(port) else None
    finally:
        proc.kill()
        for pid in children:  # what the old behaviour left running: never leak it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    return {"serving": serving, "children": len(children), "port_held_before": held_before,
            "port_freed_after_s": freed_after}


def rows(r: dict) -> list[str]:
    o, f, v, s, h = r["oversized"], r["future_dated"], r["refused_version"], r["secrets"], r["http"]
    lost = r.get("broker_lost_data")
    return [
        "| fault | result |", "|---|---|",
        f"| a 999,900-byte message (passes a default producer) | dead-lettered as {o['dead_letter_bytes']:,} bytes "
        f"with `seqsentry.truncated: {o['truncated']}`, original size {o['original_size']:,}, sha256 "
        f"{'matches' if o['sha256_matches'] else 'DIFFERS'}; {o['committed']} of 21 offsets committed; "
        f"{'no crash' if not o['crashed'] else 'CRASHED: ' + o['crashed']} |",
        f"| one event dated 2099 among {f['events']} events of 50 users | {f['bad_timestamp']} `bad-timestamp` dead "
        f"letter, {f['too_late']} too-late, {f['windows_scored']} windows scored, {f['tracked_users']} users tracked "
        "(none evicted) |",
        f"| `current` → a version not yet published, then published | refused while missing: "
        f"{v['refused_while_missing']}; loaded once published, no restart: {v['loaded_once_published']} |",
        f"| `-X sasl.jaas.config=…password=…` | exit {s['jaas']['exit']}, {s['jaas']['stderr_lines']} line, traceback: "
        f"{s['jaas']['traceback']}, secret shown: {s['jaas']['secret_shown']} |",
        f"| a malformed `-X` holding a password | exit {s['malformed']['exit']}, {s['malformed']['stderr_lines']} line, "
        f"secret shown: {s['malformed']['secret_shown']} |",
        f"| {h['slow_clients']} clients sending one header byte a second, plus {h['silent_connections']} silent "
        f"connections | {h['probes_answered']} of {h['probes']} `/healthz` probes answered within 1 s; "
        f"{h['slow_dropped']} of {h['slow_clients']} slow requests cut at the {h['request_deadline_s']:.0f} s total "
        f"deadline (last after {h['slow_dropped_after_s_max'] or 0:.1f} s); at most {h['open_connections_max']} "
        f"connections open (cap {h['max_connections']}; a new one closes the oldest of the busiest address) |",
        *([_lost_row(lost)] if lost else []),
        *_item6_rows(r),
    ]


def _item6_rows(r: dict) -> list[str]:
    out = []
    if "huge_config" in r:
        h = r["huge_config"]
        out.append(f"| an artifact whose config is inside every limit but asks for ~300M parameters (hidden 1024, 24 "
                   f"layers), checksums recomputed | refused: {h['refused']}; peak RSS grew {h['rss_growth_mb']:.0f} MB "
                   "over the refused load (896 MB before the header check) |")
    if "wrong_type_secret" in r:
        w = r["wrong_type_secret"]
        out.append(f"| `sasl.password` as a list in the YAML file / as a mapping in `SEQSENTRY_KAFKA_OPTIONS` | exit "
                   f"{w['yaml']['exit']} / {w['env']['exit']}, {w['yaml']['stderr_lines']} / {w['env']['stderr_lines']} "
                   f"line, secret shown: {w['yaml']['secret_shown']} / {w['env']['secret_shown']} |")
    if "broker_killed" in r:
        k = r["broker_killed"]
        freed = f"freed {k['port_freed_after_s']:.2f} s after" if k["port_freed_after_s"] is not None else "STILL HELD"
        out.append(f"| `seqsentry broker` killed with -9 | its broker child ({k['children']}) died with it; port {freed} |")
    return out


def _lost_row(x: dict) -> str:
    line = f"`{x['loss_line'][:110]}…`" if x["loss_line"] else "none"
    return (f"| the broker restarted empty under the detector; only the input topic created again (`--ack-timeout-s "
            f"{x['ack_timeout_s']:g}`, `-X message.timeout.ms={x['message_timeout_s'] * 1000:.0f}`) | up to "
            f"{x['outputs_waiting_max']} outputs unacknowledged; `/readyz` 200 while an output waited: at most "
            f"{x['max_wait_while_ready_s']:.1f} s; {x['loss_lines']} line: {line}; stopped once librdkafka gave up: "
            f"{'yes' if x['stopped_with'] else 'no'} |")


def write_doc(r: dict, seconds: float) -> None:
    block = "\n".join([BEGIN, f"`python -m bench faults` ({seconds:.0f} s, embedded broker):", "", *rows(r), END])
    text = DOC.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Faults (issue 14)\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    from bench import faults_evasion  # it builds on this module's helpers

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker() as broker:
        tmp = Path(d)
        reg = tiny_registry(tmp)
        print(f"tiny model trained in {time.monotonic() - t0:.0f}s", flush=True)
        results = {"oversized": oversized(broker, reg), "future_dated": future_dated(broker, reg),
                   "refused_version": refused_version(reg, tmp), "secrets": secrets(tmp), "http": http_limits(),
                   "broker_lost_data": broker_lost_data(reg), "huge_config": huge_config(reg, tmp),
                   "wrong_type_secret": wrong_type_secret(tmp), "broker_killed": broker_killed()}
        t1 = time.monotonic()
        evasion = faults_evasion.run_all(broker, reg, tmp)  # issue 20's attacks: a table of their own
    seconds = time.monotonic() - t0
    save("faults", {"seconds": seconds, **results, "evasion": evasion})
    write_doc(results, seconds)
    faults_evasion.write_doc(evasion, time.monotonic() - t1)
    print("\n".join(rows(results) + faults_evasion.rows(evasion)))
    print(f"faults: {seconds:.0f}s -> bench/results/faults.json, docs/reliability.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
