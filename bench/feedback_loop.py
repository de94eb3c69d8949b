"""The feedback loop measured on generated traffic: ``python -m bench.feedback_loop``.

A model is trained without labels on log A (its own labels stripped), scores A, and the
first N of its alerted users get verdicts from A's ground truth (abuse with the attack kind,
or legitimate); `feedback` turns them into labels, `train --labels` retrains on A, and
`compare` scores log B (another seed, labelled) with the retrained model against the first.
Reports attackers caught and normal users alerted on B as N grows, and each step's seconds.
Everything goes through the `seqsentry` commands a user runs. Small by default (a tiny model,
15,000-event logs): a check of the loop's plumbing and direction, not a quality benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import orjson

TINY = ["--layers", "1", "--hidden", "32", "--heads", "2", "--pretrain-steps", "30", "--epochs", "2",
        "--max-train-windows", "4000", "--batch-size", "64", "--window-events", "32", "--device", "cpu", "-q",
        "--no-registry"]


def _run(*args: str) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"seqsentry {args[0]} failed: {proc.stderr[-2000:]}")
    return proc.stdout, time.monotonic() - t0


def _artifact(stdout: str) -> str:
    return next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("artifact: "))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/feedback_loop"))
    p.add_argument("--events", type=int, default=15_000)
    p.add_argument("--n", type=int, nargs="+", default=[5, 10, 20], help="verdicts fed back")
    p.add_argument("--user-alert-rate", default="0.02")
    args = p.parse_args(argv)
    from stream import logs
    from training import synth

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    a = synth.generate_list(events=args.events, seed=11, attacker_fraction=0.08)
    truth = {r["user_id"]: (r.get("label", 0), r.get("attack")) for r in a if r.get("label") == 1}
    logs.write_log(out / "a.jsonl", [[{k: v for k, v in r.items() if k not in ("label", "attack")} for r in a]])
    logs.write_log(out / "b.jsonl", [synth.generate_list(events=args.events, seed=12, attacker_fraction=0.08)])
    train = [*TINY, "--user-alert-rate", args.user_alert_rate, "--out", str(out / "runs")]
    stdout, t_train0 = _run("train", str(out / "a.jsonl"), *train)
    base = _artifact(stdout)
    _, t_score = _run("score", str(out / "a.jsonl"), "--model", base, "--out", str(out / "alerts-a.jsonl"), "-q",
                      "--device", "cpu")
    alerted: list[str] = []
    for line in (out / "alerts-a.jsonl").read_bytes().splitlines():  # in the order they were raised
        u = orjson.loads(line)["user_id"]
        if u not in alerted:
            alerted.append(u)
    rows = [{"step": "train without labels", "seconds": round(t_train0, 1)},
            {"step": "score A (alerts to judge)", "seconds": round(t_score, 1), "alerted_users": len(alerted)}]
    results = []
    for n in args.n:
        verdicts = out / f"verdicts-{n}.jsonl"
        verdicts.write_bytes(b"".join(orjson.dumps(
            {"user_id": u, "verdict": "abuse", "kind": truth[u][1] or "confirmed"} if u in truth
            else {"user_id": u, "verdict": "legitimate"}) + b"\n" for u in alerted[:n]))
        _, t_fb = _run("feedback", str(verdicts), "-o", str(out / f"labels-{n}.csv"), "--replace")
        stdout, t_tr = _run("train", str(out / "a.jsonl"), "--labels", str(out / f"labels-{n}.csv"), *train)
        cand = _artifact(stdout)
        _, t_cmp = _run("compare", cand, str(out / "b.jsonl"), "--against", base, "--out", str(out / f"compare-{n}"),
                        "--device", "cpu")
        d = json.loads((out / f"compare-{n}" / "comparison.json").read_text())
        results.append({"n": n, "verdicts": min(n, len(alerted)),
                        "abuse": sum(u in truth for u in alerted[:n]),
                        "attackers_on_b": d["users"]["attackers"],
                        "caught_before": d["attackers_caught"]["current"], "caught_after": d["attackers_caught"]["candidate"],
                        "normal_alerted_before": d["normal_budget"]["current"]["normal_users_alerted"],
                        "normal_alerted_after": d["normal_budget"]["candidate"]["normal_users_alerted"],
                        "normal_users_on_b": d["users"]["normal"],
                        "seconds": {"feedback": round(t_fb, 1), "train": round(t_tr, 1), "compare": round(t_cmp, 1)}})
        print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps({"steps": rows, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
