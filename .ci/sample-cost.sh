#!/usr/bin/env bash
# CPU per idle sample of the whole daemon (issue 15 item 6), measured as the issue measured it:
# `defender-agent run --dry-run` on its built-in configuration (5 s samples, 10 s reports), for
# SAMPLE_COST_SECONDS (default 600), then SIGTERM; the daemon's user + system CPU comes from
# wait4(2)'s rusage (all its threads, also the exited spawn_blocking ones; microseconds, not
# clock ticks), divided by the number of samples taken (one at start, then one per 5 s).
# Also prints the benchmark figure for the collectors alone, for comparison, when
# SAMPLE_COST_BENCH=1 (cargo bench --bench sample -- sample/idle).
#   .ci/sample-cost.sh                       # 10 minutes, release build
#   SAMPLE_COST_SECONDS=120 .ci/sample-cost.sh
#   SAMPLE_COST_BIN=path/to/defender-agent .ci/sample-cost.sh
# Not run by .ci/run: it takes its wall time, and a CPU figure wants an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SAMPLE_COST_SECONDS:-600}
bin=${SAMPLE_COST_BIN:-target/release/defender-agent}
if [ -z "${SAMPLE_COST_BIN:-}" ]; then cargo build --release --locked >&2; fi
command -v python3 >/dev/null || { echo "sample-cost: python3 not found (apt-get install python3)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$bin" "$seconds" "$tmp" <<'PY'
import os, signal, subprocess, sys, time
bin, seconds, tmp = sys.argv[1], float(sys.argv[2]), sys.argv[3]
env = dict(os.environ, TMPDIR=tmp, DEFENDER_AGENT_LOG="info")
start = time.monotonic()
p = subprocess.Popen([bin, "run", "--dry-run"], stdout=subprocess.DEVNULL,
                     stderr=open(os.path.join(tmp, "log"), "w"), env=env)
time.sleep(seconds)
elapsed = time.monotonic() - start
p.send_signal(signal.SIGTERM)
_, status, ru = os.wait4(p.pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"sample-cost: the daemon exited with {os.waitstatus_to_exitcode(status)}")
samples = int(elapsed // 5) + 1
cpu = ru.ru_utime + ru.ru_stime
print(f"elapsed {elapsed:.1f} s, samples {samples}, reports {int(elapsed // 10) + 1}")
print(f"cpu {cpu:.3f} s (user {ru.ru_utime:.3f}, system {ru.ru_stime:.3f}), "
      f"max RSS {ru.ru_maxrss} KiB, voluntary context switches {ru.ru_nvcsw}")
print(f"per sample: {cpu / samples * 1000:.2f} ms of CPU (whole daemon, reports included)")
PY
if [ "${SAMPLE_COST_BENCH:-0}" = 1 ]; then
  cargo bench --bench sample -- sample/idle --warm-up-time 1 --measurement-time 5 2>/dev/null | grep -E '^sample/|time:'
fi
