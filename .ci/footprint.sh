#!/usr/bin/env bash
# Footprint and start-up measurements (README "Measured footprint"), on this machine, in one run:
#   - binary size of each target's stripped release build;
#   - peak RSS of `defender-agent report` (/usr/bin/time -v), natively and under qemu-user;
#   - cold start: process start to the first "Report accepted." (the daemon's debug log), median
#     of FOOTPRINT_STARTS runs, each alone on the machine;
#   - the daemon for FOOTPRINT_SECONDS (default 300) with a FOOTPRINT_INTERVAL (default 5 s) sample
#     and report interval, connected over mutual TLS to a local mosquitto, VmRSS sampled from
#     /proc/<pid>/status every FOOTPRINT_EVERY s (min / median / max / last) plus VmHWM;
#   - the reference Python agent (PyPI AWSIoTDeviceDefenderAgentSDK, in a venv) against the same
#     broker over the same time, and the ratio of its RSS to ours.
# Every daemon (native, each target under qemu, Python) runs at the same time: RSS does not depend
# on CPU share, and the run then takes FOOTPRINT_SECONDS once. Cold starts, which do, run alone.
# Under qemu-user the RSS is the emulator's process: qemu itself, its translated-code buffer and the
# guest's memory. Two baselines are measured under the same qemu (a static C "hello" and the
# agent's own `print-example-config`), and at the end of the daemon run qemu's smaps is split
# into its translation buffer, qemu's own binary and the rest (the guest and qemu's heap).
#
#   .ci/footprint.sh                      # the full run: about 6-8 minutes with the builds present
#   FOOTPRINT_SECONDS=30 .ci/footprint.sh # a quick check
#   FOOTPRINT_TARGETS="aarch64-unknown-linux-gnu" FOOTPRINT_PYTHON=0 .ci/footprint.sh
#   FOOTPRINT_TARGETS= .ci/footprint.sh   # native only
# Not run by .ci/run (it takes FOOTPRINT_SECONDS of wall time and needs PyPI); needs mosquitto,
# mosquitto-clients, openssl, qemu-user, the cross compilers (static hello), python3-venv, `time`.
# Builds missing binaries (cargo build --release; cross/build.sh <target>). Traffic: 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
seconds=${FOOTPRINT_SECONDS:-300}
interval=${FOOTPRINT_INTERVAL:-5}
every=${FOOTPRINT_EVERY:-5}
starts=${FOOTPRINT_STARTS:-3}
python=${FOOTPRINT_PYTHON:-1}
read -ra targets <<<"${FOOTPRINT_TARGETS-aarch64-unknown-linux-gnu aarch64-unknown-linux-musl thumbv7neon-unknown-linux-gnueabihf armv7-unknown-linux-gnueabihf}"
fail() { echo "footprint: $*" >&2; exit 1; }
for tool in mosquitto mosquitto_sub mosquitto_pub openssl /usr/bin/time python3; do
  command -v "$tool" >/dev/null || fail "$tool not found (apt-get install mosquitto mosquitto-clients openssl time python3-venv)"
done

work=$(mktemp -d /tmp/footprint.XXXXXX)
pids=()
cleanup() {
  local i
  # Newest first: the broker goes last, so its clients see no lost connection.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
# stop PID: SIGTERM, wait, and forget it (a reaped id may be reused by someone else's process).
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# name -> how to run it. "native" is the host build; the rest run under qemu-user.
declare -A bin run
bin[native]=target/release/defender-agent
run[native]=""
for t in "${targets[@]}"; do
  bin[$t]=target/$t/release/defender-agent
  case "$t" in
    aarch64-unknown-linux-gnu) run[$t]="qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    aarch64-unknown-linux-musl) run[$t]="qemu-aarch64" ;;
    armv7-unknown-linux-gnueabihf|thumbv7neon-unknown-linux-gnueabihf) run[$t]="qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    *) fail "unsupported target $t" ;;
  esac
done
names=(native "${targets[@]}")
[ -x "${bin[native]}" ] || cargo build --release --locked >&2
for t in "${targets[@]}"; do [ -x "${bin[$t]}" ] || cross/build.sh "$t" >/dev/null; done

# qemu_split PID GUEST_BINARY: KiB resident in qemu's translation buffer (its one big rwx
# mapping), in qemu itself (its binary and host libraries), in the guest's files (its binary and
# the -L sysroot's libraries) and anonymous (the guest's heap and stacks together with qemu's own
# heap: from outside they cannot be told apart; compare with the static hello baseline).
qemu_split() {
  awk -v bin="$(realpath "$2")" '
    /^[0-9a-f]+-[0-9a-f]+ / {
      kind = ($2 ~ /rwx/) ? "tb" : ($6 == bin || $6 ~ /^\/usr\/(aarch64-linux-gnu|arm-linux-gnueabihf)\//) ? "guest" : ($6 ~ /^\//) ? "qemu" : "anon"
    }
    /^Rss:/ { k[kind] += $2 }
    END { printf "%d %d %d %d\n", k["tb"], k["qemu"], k["guest"], k["anon"] }
  ' "/proc/$1/smaps"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# peak_rss CMD...: "Maximum resident set size" in KiB, output discarded.
peak_rss() {
  /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
}

echo "=== PKI (openssl, EC P-256): CA, server localhost/127.0.0.1, one client per thing"
pki=$work/pki
mkdir -p "$pki"
ossl() { openssl "$@" 2>/dev/null; }
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/ca.key"
ossl req -x509 -new -key "$pki/ca.key" -subj /CN=footprint-ca -days 2 -out "$pki/ca.pem" \
  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign
# issue NAME SUBJECT_CN EXTENSIONS
issue() {
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$1.key"
  ossl req -new -key "$pki/$1.key" -subj "/CN=$2" -out "$pki/$1.csr"
  printf '%s\n' "$3" >"$pki/$1.ext"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/$1.ext" -out "$pki/$1.pem"
}
issue server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
for n in "${names[@]}" py endpoint; do
  issue "client-$n" "fp-$n" "extendedKeyUsage=clientAuth"
done
chmod 0644 "$pki"/*

echo "=== mosquitto with mutual TLS on a free loopback port"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/mosquitto.conf" <<EOF
user root
persistence false
log_dest stderr
log_type all
per_listener_settings false
allow_anonymous true
listener $port 127.0.0.1
cafile $pki/ca.pem
certfile $pki/server.pem
keyfile $pki/server.key
require_certificate true
use_identity_as_username true
EOF
mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "Opening ipv4 listen socket on port $port" "$work/mosquitto.log" && break; sleep 0.05; done
grep -q "mosquitto version .* running" "$work/mosquitto.log" || fail "mosquitto did not start: $(cat "$work/mosquitto.log")"

echo "=== the Device Defender stand-in: answers every JSON report on .../accepted with its reportId"
tls() { echo --cafile "$pki/ca.pem" --cert "$pki/client-$1.pem" --key "$pki/client-$1.key"; }
mkfifo "$work/reports"
# shellcheck disable=SC2046
mosquitto_sub -h localhost -p "$port" $(tls endpoint) -i fp-endpoint -q 1 -v \
  -t '$aws/things/+/defender/metrics/json' >"$work/reports" 2>"$work/stand-in.log" &
pids+=($!)
(
  while IFS= read -r line; do
    topic=${line%% *}
    payload=${line#* }
    thing=${topic#\$aws/things/}
    thing=${thing%%/*}
    id=$(sed -nE 's/.*"report_id": *([0-9]+).*/\1/p' <<<"$payload")
    [ -n "$id" ] || { echo "stand-in: no report_id on $topic" >&2; continue; }
    # shellcheck disable=SC2046
    mosquitto_pub -h localhost -p "$port" $(tls endpoint) -i fp-answer -q 1 -t "$topic/accepted" \
      -m "{\"thingName\":\"$thing\",\"reportId\":$id,\"status\":\"ACCEPTED\",\"timestamp\":$(date +%s%3N)}"
  done <"$work/reports"
) &
pids+=($!)
for _ in $(seq 100); do grep -q "Received SUBSCRIBE from fp-endpoint" "$work/mosquitto.log" && break; sleep 0.05; done
grep -q "Received SUBSCRIBE from fp-endpoint" "$work/mosquitto.log" || fail "the stand-in did not subscribe"

# config NAME: the daemon's configuration, thing fp-NAME (the example's custom metrics).
config() {
  local f=$work/$1.toml
  cat >"$f" <<EOF
thing_name = "fp-$1"
state_dir = "$work/state-$1"
shutdown_timeout_secs = 5
[collect]
sample_interval_secs = $interval
[report]
interval_secs = $interval
startup_jitter_secs = 0
[[custom_metrics]]
name = "cpu_usage"
type = "number"
builtin = "cpu_usage_percent"
[[custom_metrics]]
name = "memory_used"
type = "number"
builtin = "memory_used_percent"
[[custom_metrics]]
name = "disk_used"
type = "number"
builtin = "disk_used_percent"
mount = "/"
[mqtt]
endpoint = "localhost"
port = $port
ca_file = "$pki/ca.pem"
cert_file = "$pki/client-$1.pem"
key_file = "$pki/client-$1.key"
answer_timeout_secs = 10
EOF
  echo "$f"
}
# start NAME LOG: the daemon in the background, debug log of the agent module to LOG; sets $!.
start() {
  local cmd
  read -ra cmd <<<"${run[$1]}"
  rm -rf "$work/state-$1"
  DEFENDER_AGENT_LOG=info,defender_agent::agent=debug "${cmd[@]}" "${bin[$1]}" run --config "$(config "$1")" 2>"$2" &
}
# wait_for FILE TEXT TIMEOUT_S: 0 when TEXT appears, polling every 10 ms.
wait_for() {
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt "$end" ]; do
    grep -qF "$2" "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  return 1
}

declare -A size report cold daemon hwm base_anon guest dirty
echo
echo "=== binary size (stripped release)"
for n in "${names[@]}"; do
  size[$n]=$(stat -c %s "${bin[$n]}")
  echo "$n: ${size[$n]} bytes ($(file -b "${bin[$n]}" | grep -oE 'statically linked|static-pie linked|dynamically linked'))"
done

echo
echo "=== peak RSS of \`defender-agent report\` (built-in configuration: two samples 1 s apart, JSON to stdout)"
hello=$work/hello.c
printf '#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\nint main(int c, char **v) { puts("hello"); if (c > 1) sleep(atoi(v[1])); return 0; }\n' >"$hello"
for n in "${names[@]}"; do
  read -ra cmd <<<"${run[$n]}"
  report[$n]=$(peak_rss "${cmd[@]}" "${bin[$n]}" report --format json)
  idle=$(peak_rss "${cmd[@]}" "${bin[$n]}" print-example-config)
  line="$n: report ${report[$n]} KiB ($(mib "${report[$n]}") MiB); print-example-config $idle KiB"
  if [ -n "${run[$n]}" ]; then
    case "$n" in aarch64*) cc=aarch64-linux-gnu-gcc ;; armv7* | thumbv7*) cc=arm-linux-gnueabihf-gcc ;; esac
    "$cc" -static -O2 -o "$work/hello-$n" "$hello"
    base=$(peak_rss "${cmd[0]}" "$work/hello-$n")
    line+="; qemu running a static C hello: $base KiB, so report minus that: $(( report[$n] - base )) KiB"
    "${cmd[0]}" "$work/hello-$n" 3 >/dev/null &
    p=$!
    sleep 1.5
    read -r _ _ _ base_anon[$n] < <(qemu_split "$p" "$work/hello-$n")
    wait "$p"
    line+="; the hello's anonymous memory under qemu ${base_anon[$n]} KiB"
  fi
  echo "$line"
done

echo
echo "=== cold start: process start to the first \"Report accepted.\" (median of $starts, each alone)"
for n in "${names[@]}"; do
  times=()
  for i in $(seq "$starts"); do
    log=$work/cold-$n-$i.log
    t0=$EPOCHREALTIME
    start "$n" "$log"
    p=$!
    pids+=("$p")
    wait_for "$log" "Report accepted." 60 || fail "$n: no accepted report within 60 s: $(tail -5 "$log")"
    t1=$EPOCHREALTIME
    stop "$p"
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
  done
  cold[$n]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "$n: ${cold[$n]} s (runs: ${times[*]})"
done

py_ok=0
if [ "$python" = 1 ]; then
  echo
  echo "=== the reference Python agent (PyPI AWSIoTDeviceDefenderAgentSDK) in a venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q AWSIoTDeviceDefenderAgentSDK
  "$work/venv/bin/pip" list 2>/dev/null | grep -iE 'AWSIoTDeviceDefenderAgentSDK|awsiotsdk|awscrt|psutil'
  # Its CLI has no port option (mtls_from_path defaults to 8883): the one change is that port.
  cat >"$work/py-agent.py" <<EOF
import functools, sys
from awsiot import mqtt_connection_builder
mqtt_connection_builder.mtls_from_path = functools.partial(mqtt_connection_builder.mtls_from_path, port=$port)
from AWSIoTDeviceDefenderAgentSDK import agent
agent.main()
EOF
  py_start() {
    "$work/venv/bin/python" -u "$work/py-agent.py" -e localhost -r "$pki/ca.pem" -c "$pki/client-py.pem" \
      -k "$pki/client-py.key" -id fp-py -f json -i "$interval" -cm >"$1" 2>&1 &
  }
  t0=$EPOCHREALTIME
  py_start "$work/py-cold.log"
  p=$!
  pids+=("$p")
  if wait_for "$work/py-cold.log" "/accepted'" $((interval + 60)); then
    t1=$EPOCHREALTIME
    cold[py]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    echo "py: cold start ${cold[py]} s, of which $((interval + 2)) s are by design (it sleeps 2 s after connecting and does not publish its first sample)"
    py_ok=1
  else
    echo "py: no accepted answer within $((interval + 60)) s; its output:"
    tail -20 "$work/py-cold.log"
  fi
  stop "$p"
fi

echo
echo "=== daemons for $seconds s at the same time (sample and report every $interval s), VmRSS every $every s"
declare -A dpid
for n in "${names[@]}"; do
  start "$n" "$work/daemon-$n.log"
  dpid[$n]=$!
  pids+=("${dpid[$n]}")
done
if [ "$python" = 1 ]; then
  py_start "$work/daemon-py.log"
  dpid[py]=$!
  pids+=("${dpid[py]}")
fi
t_end=$((SECONDS + seconds))
while [ $SECONDS -lt $t_end ]; do
  sleep "$every"
  for n in "${!dpid[@]}"; do
    awk '/^VmRSS:/ { print $2 }' "/proc/${dpid[$n]}/status" >>"$work/rss-$n" 2>/dev/null ||
      fail "$n stopped early: $(tail -5 "$work/daemon-$n.log")"
  done
done
for n in "${!dpid[@]}"; do
  hwm[$n]=$(awk '/^VmHWM:/ { print $2 }' "/proc/${dpid[$n]}/status")
  daemon[$n]=$(tail -n1 "$work/rss-$n")
  # Anonymous (heap, stacks) vs file-backed (binary text, shared libraries: clean, shared with
  # other processes, reclaimable) resident memory, and what only this process dirtied.
  dirty[$n]=$(awk '/^Private_Dirty:/ { print $2 }' "/proc/${dpid[$n]}/smaps_rollup")
  awk '/^RssFile:/ { f = $2 } /^RssAnon:/ { a = $2 } END { printf "anonymous %d KiB, file-backed %d KiB", a, f }' \
    "/proc/${dpid[$n]}/status" >"$work/split-$n"
  awk '/^Private_Dirty:/ { printf ", private dirty %d KiB", $2 }' "/proc/${dpid[$n]}/smaps_rollup" >>"$work/split-$n"
  if [ "$n" != native ] && [ "$n" != py ]; then
    read -r tb q g a < <(qemu_split "${dpid[$n]}" "${bin[$n]}")
    guest[$n]=$((g + a - base_anon[$n]))
    echo "  qemu smaps at the end: translation buffer $tb KiB, qemu and its host libraries $q KiB, guest files $g KiB, anonymous $a KiB; guest estimate (guest files + anonymous - the hello's anonymous) ${guest[$n]} KiB" >"$work/smaps-$n"
  fi
done
accepted() { grep -c "${2:-Report accepted.}" "$1" || true; }
for n in "${names[@]}" ${dpid[py]:+py}; do
  stats=$(sort -n "$work/rss-$n" | awk '{ v[NR] = $1 } END { printf "min %d median %d max %d", v[1], v[int((NR + 1) / 2)], v[NR] }')
  if [ "$n" = py ]; then got=$(accepted "$work/daemon-py.log" "/accepted'"); else got=$(accepted "$work/daemon-$n.log"); fi
  echo "$n: VmRSS KiB $stats, at the end ${daemon[$n]} ($(mib "${daemon[$n]}") MiB: $(cat "$work/split-$n")); VmHWM ${hwm[$n]} KiB; $got reports accepted"
  [ -f "$work/smaps-$n" ] && cat "$work/smaps-$n"
done
for n in "${!dpid[@]}"; do stop "${dpid[$n]}"; done

echo
echo "=== summary"
echo "| Target | Binary | \`report\` peak RSS | Daemon RSS after ${seconds} s (VmHWM) | guest estimate | Cold start to first accepted report |"
echo "|---|---|---|---|---|---|"
for n in "${names[@]}"; do
  where=$([ "$n" = native ] && echo "x86_64, native" || echo "$n, qemu-user")
  est=$([ "$n" = native ] && echo "-" || echo "$(mib "${guest[$n]}") MiB")
  echo "| $where | ${size[$n]} B | $(mib "${report[$n]}") MiB | $(mib "${daemon[$n]}") MiB ($(mib "${hwm[$n]}") MiB) | $est | ${cold[$n]} s |"
done
if [ -n "${dpid[py]:-}" ]; then
  echo "| Python reference agent, native | - | - | $(mib "${daemon[py]}") MiB ($(mib "${hwm[py]}") MiB) | - | ${cold[py]:-none} s |"
  awk -v p="${daemon[py]}" -v o="${daemon[native]}" -v ph="${hwm[py]}" -v oh="${hwm[native]}" \
    'BEGIN { printf "Python / ours (native daemon RSS after the run): %.1f x; by VmHWM: %.1f x\n", p / o, ph / oh }'
  awk -v p="${dirty[py]}" -v o="${dirty[native]}" 'BEGIN { printf "Python / ours, private dirty memory only: %.1f x\n", p / o }'
  [ "$py_ok" = 1 ] || echo "(the Python agent got no accepted answer: see above)"
fi
echo "(logs and samples in $work; measured $(date -u +%Y-%m-%d), load average $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) cores, $(rustc --version | cut -d' ' -f1-2), $(qemu-aarch64 --version | head -n1))"
