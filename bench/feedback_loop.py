"""The feedback loop: ``python -m bench.feedback_loop`` (generated) or ``--dataset yoochoose`` (real).

A model is trained without labels on log A (its own labels stripped), scores A, and the
first N of its alerted users get verdicts from A's ground truth (abuse with the attack kind,
or legitimate); `feedback` turns them into labels, `train --labels` retrains on A, and
`compare` scores log B (another seed, labelled) with the retrained model against the first.
Reports attackers caught and normal users alerted on B as N grows, and each step's seconds.
Everything goes through the `seqsentry` commands a user runs. Small by default (a tiny model,
15,000-event logs): a check of the loop's plumbing and direction, not a quality benchmark.

``--dataset NAME`` runs it on the real-traffic benchmark instead (bench.ecommerce.prepare: the
clickstream's earlier period as training log, the later period's real users plus attackgen's
attackers as test traffic). The test period's users split by first event at its midpoint into
A (the alerts analysts judge) and B (where the result is measured). The stock model is trained
on the training log without labels and published in a scratch registry; it scores A; the first
N alerted users of A get verdicts from the ground truth (N = 20, 50, 200 by default, capped by
the alerts there are); `feedback` turns them into labels; `train --labels --init-from BASE`
continues the stock model on the training log plus A (``--from-scratch``: retrains afresh);
`compare` scores B with both models (B's truth as labels); `promote --comparison` runs the default gate (and a promoted candidate is rolled back,
so each N is gated against the same model). Results: bench/results/feedback_loop-NAME.json.
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


def real(name: str, ns: list[int], seed: int, work: Path, continued: bool = True) -> dict:
    """The loop on the real-traffic benchmark (see the module docstring); ``continued``: the
    candidate continues the label-free model (`train --init-from`) instead of training afresh."""
    from bench import ecommerce

    ds = ecommerce.load(name, ecommerce.DEFAULT_DATA)
    if ds is None:
        raise SystemExit(f"skip: no {name} clickstream under {ecommerce.DEFAULT_DATA}")
    work.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(seed=seed, per_kind=30, share=0.05, budget=0.005, quick=False)
    prep = ecommerce.prepare(ds, work, args)
    truth = {a.user_id: a for a in prep.truth}
    mid = prep.cut + (prep.hi - prep.cut) // 2
    first = {u: min(t for t, _, _ in seq) for u, seq in prep.test_seqs.items()}
    part = {"a": [u for u in prep.test_seqs if first[u] < mid], "b": [u for u in prep.test_seqs if first[u] >= mid]}
    logs_ = {k: work / f"{name}-{k}{ds.suffix}" for k in part}
    for k, users in part.items():
        ds.write(logs_[k], [(u, t, ty, i) for u in users for t, ty, i in prep.test_seqs[u]])
    retrain_log = work / f"{name}-train-plus-a{ds.suffix}"
    ds.write(retrain_log, [(u, t, ty, i) for u, seq in prep.train_u.items() for t, ty, i in seq]
             + [(u, t, ty, i) for u in part["a"] for t, ty, i in prep.test_seqs[u]])
    b_labels = work / "b-labels.csv"
    b_labels.write_text("user_id,label,attack\n" + "".join(f"{u},1,{truth[u].kind}\n" for u in part["b"] if u in truth))
    reg = work / "registry"
    t0 = time.monotonic()
    ecommerce.cli(["train", prep.train_log, *ds.flags, "--registry", reg, "--out", work / "runs-base"])
    t_base = time.monotonic() - t0
    base = sorted((work / "runs-base").glob("*/meta.json"))[-1].parent
    t0 = time.monotonic()
    ecommerce.cli(["score", logs_["a"], "--model", base, "--out", work / "alerts-a.jsonl", *ds.flags])
    t_score = time.monotonic() - t0
    alerted: list[str] = []
    for line in (work / "alerts-a.jsonl").read_bytes().splitlines():  # in the order they were raised
        if (u := str(orjson.loads(line)["user_id"])) not in alerted:
            alerted.append(u)
    out = {"dataset": name, "seed": seed, "continued": continued, "users_a": len(part["a"]), "users_b": len(part["b"]),
           "attackers_a": sum(u in truth for u in part["a"]), "attackers_b": sum(u in truth for u in part["b"]),
           "alerted_a": len(alerted), "alerted_a_abuse": sum(u in truth for u in alerted),
           "seconds": {"train without labels": round(t_base, 1), "score A": round(t_score, 1)}, "results": []}
    for n in ns:
        verdicts = work / f"verdicts-{n}.jsonl"
        verdicts.write_bytes(b"".join(orjson.dumps(
            {"user_id": u, "verdict": "abuse", "kind": truth[u].kind} if u in truth
            else {"user_id": u, "verdict": "legitimate"}) + b"\n" for u in alerted[:n]))
        _, t_fb = _run("feedback", str(verdicts), "-o", str(work / f"labels-{n}.csv"), "--replace")
        cand, t_tr, _ = ecommerce.train_stock(retrain_log, [*ds.flags, "--labels", work / f"labels-{n}.csv",
                                                            *(["--init-from", base] if continued else [])], work)
        t0 = time.monotonic()
        ecommerce.cli(["compare", cand, logs_["b"], "--against", base, "--labels", b_labels, *ds.flags,
                       "--out", work / f"compare-{n}"])
        t_cmp = time.monotonic() - t0
        d = json.loads((work / f"compare-{n}" / "comparison.json").read_text())
        t0 = time.monotonic()
        gate = subprocess.run([sys.executable, "-m", "stream.cli", "promote", str(cand), "--comparison",
                               str(work / f"compare-{n}"), "--registry", str(reg)], capture_output=True, text=True)
        t_gate = time.monotonic() - t0
        if gate.returncode == 0:  # gate the next N against the same model
            _run("promote", "--rollback", "--registry", str(reg))
        row = {"n": n, "verdicts": min(n, len(alerted)), "abuse": sum(u in truth for u in alerted[:n]),
               "legitimate": sum(u not in truth for u in alerted[:n]),
               "attackers_b": d["users"]["attackers"], "normal_users_b": d["users"]["normal"],
               "caught_before": d["attackers_caught"]["current"], "caught_after": d["attackers_caught"]["candidate"],
               "normal_alerted_before": d["normal_budget"]["current"]["normal_users_alerted"],
               "normal_alerted_after": d["normal_budget"]["candidate"]["normal_users_alerted"],
               "promoted": gate.returncode == 0, "gate": (gate.stdout + gate.stderr).strip().splitlines()[-1:],
               "seconds": {"feedback": round(t_fb, 1), "train": round(t_tr, 1), "compare": round(t_cmp, 1),
                           "promote": round(t_gate, 1)}}
        out["results"].append(row)
        print(json.dumps(row), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/feedback_loop"))
    p.add_argument("--events", type=int, default=15_000)
    p.add_argument("--n", type=int, nargs="+", help="verdicts fed back (default 5 10 20; with --dataset 20 50 200)")
    p.add_argument("--user-alert-rate", default="0.02")
    p.add_argument("--dataset", help="run on the real-traffic benchmark's clickstream NAME (yoochoose, diginetica, "
                   "taobao) with the stock model; --n defaults to 20 50 200")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-scratch", action="store_true",
                   help="with --dataset: retrain each candidate from scratch instead of continuing the label-free model")
    args = p.parse_args(argv)
    if args.dataset:
        import tempfile

        ns = args.n or [20, 50, 200]
        with tempfile.TemporaryDirectory(prefix="seqsentry-feedback-") as tmp:
            t0 = time.monotonic()
            res = real(args.dataset, ns, args.seed, Path(tmp), continued=not args.from_scratch)
        res["command"] = f"python -m bench.feedback_loop --dataset {args.dataset}" + (
            " --from-scratch" if args.from_scratch else "")
        res["total_seconds"] = round(time.monotonic() - t0, 1)
        from bench.common import save

        save(f"feedback_loop-{args.dataset}" + ("-scratch" if args.from_scratch else ""), res)
        return 0
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
    for n in args.n or [5, 10, 20]:
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
