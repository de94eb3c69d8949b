#!/usr/bin/env bash
# The package that ships, checked the way it ships: build the wheel from exactly what
# deploy/Dockerfile copies into the image, install it NON-editable into a fresh virtual
# environment, and run the installed `seqsentry` from outside the checkout:
#   --help, synth -> train (tiny) -> score, and `run` (the Dockerfile's own CMD arguments)
#   against the embedded broker, probed with the Dockerfile's own HEALTHCHECK command.
# The venv reuses the system's packages (--system-site-packages: torch etc. are not
# downloaded again); the wheel itself is installed with --no-deps --force-reinstall, and
# the check fails unless `stream` is imported from the venv's copy.
# Not checked here (no Docker engine): the CUDA base image, apt packages, the CUDA torch
# index, the non-root user and volume. About a minute on the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/seqsentry-wheel.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n== wheel check (%ss): %s\n' "$SECONDS" "$*"; }
fail() { echo "wheel check FAILED: $*" >&2; exit 1; }

step "stage the Docker build context (the Dockerfile's COPY lines) and build the wheel"
python - "$REPO/deploy/Dockerfile" "$REPO" "$WORK/app" <<'EOF'
import shlex, shutil, sys
from pathlib import Path
dockerfile, repo, app = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
copies = [shlex.split(line)[1:] for line in lines if line.split()[:1] == ["COPY"]]
assert copies, "deploy/Dockerfile has no COPY line"
for *srcs, dst in copies:  # WORKDIR /app: relative destinations land under the context root
    assert not any(s.startswith("--") for s in srcs), f"unexpected COPY flags: {srcs}"
    for src in srcs:
        s = repo / src
        if s.is_dir():  # like Docker: the directory's contents go to dst
            shutil.copytree(s, app / dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            target = app / dst / s.name if dst.endswith("/") or len(srcs) > 1 else app / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, target)
print("build context:", ", ".join(sorted(p.name for p in app.iterdir())))
EOF
# `pip install .` in the Dockerfile builds this same wheel (PEP 517, setuptools from the index)
pip wheel --no-deps -q -w "$WORK/dist" "$WORK/app"
WHEEL=$(ls "$WORK"/dist/seqsentry-*.whl)
echo "built $(basename "$WHEEL")"
python - "$WHEEL" "$REPO" <<'EOF'
import sys, zipfile
from pathlib import Path
wheel, repo = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
want = {str(p.relative_to(repo)) for top in ("stream", "training", "bench")
        for p in (repo / top).rglob("*.py") if (p.parent / "__init__.py").exists()}
want |= {str(p.relative_to(repo)) for p in (repo / "stream/schemas").glob("*.json")}
missing = sorted(want - names)
assert not missing, f"the wheel lacks {len(missing)} package files, e.g. {missing[:5]}"
print(f"the wheel holds all {len(want)} package files (stream/runtime/ and schemas included)")
EOF

step "install it non-editable into a fresh venv"
python -m venv --system-site-packages "$WORK/venv"
VENV_PY=$WORK/venv/bin/python
"$VENV_PY" -m pip install -q --no-deps --force-reinstall "$WHEEL"
mkdir -p "$WORK/run" && cd "$WORK/run"   # outside the checkout: nothing from it on sys.path
export PATH=$WORK/venv/bin:$PATH
where=$("$VENV_PY" -c 'import stream, training; print(stream.__file__); print(training.__file__)')
echo "$where"
case "$where" in
  *"$REPO"*) fail "the venv imports the checkout, not the wheel" ;;
esac
[ "$(grep -c "^$WORK/venv/" <<<"$where")" = 2 ] || fail "stream/training are not imported from the venv"
[ "$(command -v seqsentry)" = "$WORK/venv/bin/seqsentry" ] || fail "seqsentry is not the venv's script"
if "$VENV_PY" -m pip check 2>/dev/null | grep -i '^seqsentry '; then fail "a dependency of the wheel is missing"; fi

step "seqsentry --help (installed)"
seqsentry --help >help.txt || { cat help.txt; fail "seqsentry --help"; }
for cmd in run score train demo broker replay topics alerts; do
  grep -qw "$cmd" help.txt || fail "seqsentry --help does not list $cmd"
done
echo "ok: --help lists its commands"

step "synth -> train (tiny) -> score (installed)"
seqsentry synth traffic.jsonl --events 3000 --seed 1 -q
seqsentry train traffic.jsonl --registry registry --out runs -q --device cpu --pretrain-steps 10 --epochs 1 \
  --layers 1 --hidden 32 --heads 2 --max-train-windows 2000 --window-events 16
seqsentry score traffic.jsonl --registry registry --out alerts.jsonl -q --device cpu | tee score.txt
grep -q '"events": 3000' score.txt || fail "score did not read the 3,000 generated events"

step "run (the Dockerfile's CMD) against the embedded broker (installed)"
ports=$("$VENV_PY" -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')
read -r KPORT MPORT <<<"$ports"
seqsentry broker --port "$KPORT" --topic events >broker.log 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q "embedded broker on" broker.log && break; sleep 0.2; done
grep -q "embedded broker on" broker.log || { cat broker.log; fail "seqsentry broker did not start"; }
# The image's command line: ENTRYPOINT ["seqsentry"] + CMD, with /registry pointed here
mapfile -t CMD_ARGS < <("$VENV_PY" - "$REPO/deploy/Dockerfile" "$WORK/run/registry" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
entry = json.loads(next(line for line in lines if line.startswith("ENTRYPOINT")).split(None, 1)[1])
cmd = json.loads(next(line for line in lines if line.startswith("CMD")).split(None, 1)[1])
assert entry == ["seqsentry"], entry
print("\n".join(sys.argv[2] if a == "/registry" else a for a in cmd))
EOF
)
echo "seqsentry ${CMD_ARGS[*]}"
seqsentry "${CMD_ARGS[@]}" -b "127.0.0.1:$KPORT" --metrics-host 127.0.0.1 --metrics-port "$MPORT" \
  --device cpu >run.log 2>&1 & RUN_PID=$!; PIDS+=($RUN_PID)
seqsentry replay traffic.jsonl -b "127.0.0.1:$KPORT" -t events -q
consumed() { "$VENV_PY" -c 'import sys, urllib.request
try: text = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
except OSError: text = ""
print(next((int(float(l.split()[1])) for l in text.splitlines() if l.startswith("seqsentry_events_consumed_total ")), 0))' \
  "http://127.0.0.1:$MPORT/metrics"; }
for _ in $(seq 120); do [ "$(consumed)" = 3000 ] && break; sleep 0.5; done
[ "$(consumed)" = 3000 ] || { cat run.log; fail "seqsentry run did not consume the 3,000 replayed events"; }
echo "ok: seqsentry run consumed 3,000 events"
# The image's HEALTHCHECK, aimed at this detector's metrics port
HEALTH=$(sed -n 's/^ *CMD python -c //p' "$REPO/deploy/Dockerfile" | head -1)
[ -n "$HEALTH" ] || fail "no HEALTHCHECK CMD in deploy/Dockerfile"
HEALTH=${HEALTH//127.0.0.1:9108/127.0.0.1:$MPORT}
eval "\"$VENV_PY\" -c $HEALTH" || { cat run.log; fail "the Dockerfile's HEALTHCHECK fails on a running detector"; }
echo "ok: the Dockerfile's HEALTHCHECK passes"
kill -TERM "$RUN_PID"
rc=0; wait "$RUN_PID" || rc=$?
[ "$rc" = 0 ] || { cat run.log; fail "seqsentry run exited $rc on SIGTERM"; }
echo "ok: seqsentry run stopped cleanly on SIGTERM"
echo
echo "wheel check passed: the installed seqsentry (from $(basename "$WHEEL")) works"
