"""Deployment files: compose spec, Prometheus config and rules, dashboard queries, k8s manifests,
and a real Prometheus scraping a running detector."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from stream.broker import free_port
from stream.metrics import Metrics
from stream.runtime.gauges import RuntimeGauges

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
REQUIRE_TOOLS = os.environ.get("CI") == "true"  # CI installs promtool/prometheus: a missing tool is a failure there


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if REQUIRE_TOOLS:
            pytest.fail(f"{name} is not installed (CI installs Debian's prometheus package)")
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return path


def compose_schema() -> dict:
    files = importlib.metadata.files("check-jsonschema") or []
    (path,) = [f for f in files if str(f).endswith("vendor/compose-spec.json")]
    return json.loads(Path(path.locate()).read_text())


def test_compose_file_validates_against_the_compose_specification():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(doc, compose_schema())
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yml").read_text())
    jsonschema.validate(gpu, compose_schema())


def test_compose_stack_has_every_part_with_health_checks_and_restart_policies():
    svc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"kafka", "topics", "detector", "prometheus", "grafana", "trainer", "replayer"} <= set(svc)
    for name in ("kafka", "detector", "prometheus", "grafana"):
        assert "healthcheck" in svc[name] and svc[name]["restart"] == "unless-stopped"
    assert svc["trainer"]["profiles"] == ["trainer"] and svc["replayer"]["profiles"] == ["replayer"]
    assert "KRaft" in (ROOT / "docker-compose.yml").read_text() or svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yml").read_text())["services"]["detector"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_promtool_accepts_the_prometheus_config_and_rules():
    promtool = tool("promtool")
    for args in (["check", "config", str(DEPLOY / "prometheus/prometheus.yml")],
                 ["check", "rules", str(DEPLOY / "prometheus/rules.yml")]):
        proc = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def exported_names() -> set[str]:
    names = set()
    for fam in Metrics().registry.collect():
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
    return names | {fam.name for fam in RuntimeGauges.describe()}  # `seqsentry run` adds these at scrape time


def queried_names() -> dict[str, set[str]]:
    exprs = {"rules": [r["expr"] for g in yaml.safe_load((DEPLOY / "prometheus/rules.yml").read_text())["groups"]
                       for r in g["rules"]],
             "dashboard": [t["expr"] for p in json.loads((DEPLOY / "grafana/dashboards/seqsentry.json").read_text())["panels"]
                           for t in p["targets"]]}
    return {k: {m for e in v for m in re.findall(r"\bseqsentry_[a-z_]+", e)} for k, v in exprs.items()}


def test_every_metric_the_dashboard_and_rules_query_is_exported():
    exported = exported_names()
    for where, names in queried_names().items():
        assert names, where
        assert names <= exported, f"{where} queries unknown series: {sorted(names - exported)}"


def test_dashboard_covers_what_operators_need():
    titles = " ".join(p["title"].lower() for p in
                      json.loads((DEPLOY / "grafana/dashboards/seqsentry.json").read_text())["panels"])
    for needed in ("events in", "lag (messages)", "lag (seconds)", "latency", "batch size", "batch wait", "queue",
                   "inference", "gpu", "alerts", "rejects", "model version", "rebalances"):
        assert needed in titles, needed


def k8s() -> dict[str, dict]:
    docs = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            docs[d["kind"]] = d
    return docs


def test_kubernetes_manifests_fit_together():
    d = k8s()
    assert {"Deployment", "ConfigMap", "Service", "ServiceMonitor", "ScaledObject", "PersistentVolumeClaim"} <= set(d)
    pod = d["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert d["Deployment"]["spec"]["selector"]["matchLabels"] == labels
    assert d["Service"]["spec"]["selector"] == labels
    assert d["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= d["Service"]["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    cfg = yaml.safe_load(d["ConfigMap"]["data"]["seqsentry.yaml"])
    assert cfg["metrics_port"] == container["ports"][0]["containerPort"]
    from stream.service import ServiceConfig

    ServiceConfig(**cfg)  # every key is a real setting
    so = d["ScaledObject"]["spec"]
    assert so["scaleTargetRef"]["name"] == d["Deployment"]["metadata"]["name"]
    assert so["maxReplicaCount"] == int(d["ConfigMap"]["data"]["events_partitions"])
    trig = so["triggers"][0]
    assert trig["type"] == "kafka" and trig["metadata"]["consumerGroup"] == cfg["group"]
    assert trig["metadata"]["topic"] == cfg["topic"]


def test_a_real_prometheus_scrapes_a_running_detector(broker, tiny_model, traffic, tmp_path):
    from stream import logs, replay
    from tests.test_service import Stack, wait_for

    prometheus = tool("prometheus")
    stack = Stack(broker, tiny_model[1])
    svc = stack.start()
    port = free_port()
    target = svc.metrics_url.removeprefix("http://")
    (tmp_path / "prom.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "seqsentry", "static_configs": [{"targets": [target]}]}]}))
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prom.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "l.jsonl"
        logs.write_log(log, [traffic[:500]])
        replay.replay(log, broker.bootstrap, stack.topics["topic"])
        wait_for(lambda: stack.settled(500), 60, "events processed")

        def value() -> float:
            q = urllib.parse.quote("seqsentry_events_consumed_total")
            try:
                body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={q}", timeout=2))
            except OSError:
                return -1
            res = body["data"]["result"]
            return float(res[0]["value"][1]) if res else -1

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and value() < 500:
            time.sleep(0.5)
        assert value() == 500
    finally:
        proc.terminate()
        proc.wait(10)
        stack.stop()
