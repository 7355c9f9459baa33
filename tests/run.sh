#!/usr/bin/env bash
# The test command (README): installs what cargo does not bring (Debian's mosquitto,
# PostgreSQL, tinyproxy, python3-venv), makes the Python test venv (once: the reference agent
# from PyPI, AWSIoTDeviceDefenderAgentSDK, with boto3, awscli and paho-mqtt), then runs every
# test of the workspace (the agent and the fleet service). Tests that need a broker, a proxy or a
# database start their own on a free loopback port.
#   DEFENDER_TEST_VENV=DIR   the venv to use or make (default target/test-venv); the tests read it
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || need+=(tinyproxy)
# The fleet store's tests start a throwaway server from /usr/lib/postgresql/<v>/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# The Python reference agent's venv (fleet end-to-end tests).
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
install() {
  echo "tests/run.sh: installing $* (needed by the broker, proxy, database and Python agent tests)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
[ ${#need[@]} -eq 0 ] || install "${need[@]}"
export PATH="$PATH:/usr/sbin"

# The venv is made once and kept (target/ is the cache); a complete one is reused as it is.
venv=${DEFENDER_TEST_VENV:-$PWD/target/test-venv}
py_pkgs=(boto3 awscli paho-mqtt AWSIoTDeviceDefenderAgentSDK)
py_check='import AWSIoTDeviceDefenderAgentSDK, awsiot, paho.mqtt, boto3, awscli'
if ! "$venv/bin/python" -c "$py_check" >/dev/null 2>&1; then
  echo "tests/run.sh: making the Python test venv in $venv (${py_pkgs[*]})" >&2
  # Debian's python3 has the venv module but not ensurepip without python3-venv.
  python3 -m venv "$venv" 2>/dev/null || { install python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check "${py_pkgs[@]}"
  "$venv/bin/python" -c "$py_check"
fi
export DEFENDER_TEST_VENV=$venv

exec cargo test --workspace --all-targets "$@"
