#!/usr/bin/env bash
# CI, fleet part (called by .ci/run after the tests; runnable alone, as root, on a clean clone):
# ARM release builds (each target built once, by cross/build.sh as a user would: armhf Thumb-2 NEON,
# ARM-mode armv7 and aarch64 glibc, aarch64 musl static), glibc floor (glibc targets) or no interpreter (musl), size budget,
# `report` + `validate` for each ARM binary under qemu-user (and its report validated by the native
# binary), the library tests for aarch64 under qemu-user, each ARM daemon against mosquitto over
# mTLS under qemu-user, and the Debian packages for amd64, arm64 and armhf (.ci/deb-check.sh).
# Nothing is cached: every tool it needs is installed here. Measured on the 2-core machine shared
# with other builds: 50 s with everything built; 6 min at -j 1 with dependencies built (only the
# crate and LTO per target). From clean add cargo-deb (~2 min) and the dependencies of four builds
# (aarch64 + armv7 release, aarch64 test, amd64 release): about 10-15 minutes in all. The
# aarch64-musl target adds about 5 minutes from clean (its own dependencies; 3 CPU-minutes), then
# 10 s per run (report/validate 3 s, daemon tests 6 s); the armv7 daemon tests another 6 s.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { echo; echo "=== fleet: $* ($(($(date +%s) - start)) s)"; }
fail() { echo "fleet: $*" >&2; exit 1; }

# README "Boards, targets and footprint": the budget and the glibc floor promised there.
# The armhf build is Thumb-2 with NEON (every ARMv7 Raspberry Pi): 2.5 MB; ARM-mode armv7 (boards
# without NEON) keeps its 3 MiB.
declare -A budget=([aarch64-unknown-linux-gnu]=$((7 * 512 * 1024)) [thumbv7neon-unknown-linux-gnueabihf]=2500000
  [armv7-unknown-linux-gnueabihf]=$((3 * 1024 * 1024)) [aarch64-unknown-linux-musl]=$((7 * 512 * 1024)))
declare -A runner=([aarch64-unknown-linux-gnu]="qemu-aarch64 -L /usr/aarch64-linux-gnu"
  [thumbv7neon-unknown-linux-gnueabihf]="qemu-arm -L /usr/arm-linux-gnueabihf"
  [armv7-unknown-linux-gnueabihf]="qemu-arm -L /usr/arm-linux-gnueabihf" [aarch64-unknown-linux-musl]="qemu-aarch64")
declare -A objdump=([aarch64-unknown-linux-gnu]=aarch64-linux-gnu-objdump
  [thumbv7neon-unknown-linux-gnueabihf]=arm-linux-gnueabihf-objdump
  [armv7-unknown-linux-gnueabihf]=arm-linux-gnueabihf-objdump [aarch64-unknown-linux-musl]=aarch64-linux-gnu-objdump)
declare -A debarch=([aarch64-unknown-linux-gnu]=arm64 [thumbv7neon-unknown-linux-gnueabihf]=armhf)
glibc_floor=2.34
# check_floor OBJDUMP BINARY: the newest GLIBC_x.y symbol version the binary needs is at most
# $glibc_floor (README, and the package's Depends: libc6 (>= 2.34)).
check_floor() {
  local floor
  floor=$("$1" -T "$2" | grep -oE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sed 's/GLIBC_//' | sort -uV | tail -n1)
  echo "$2: needs glibc >= $floor"
  [ -n "$floor" ] || fail "$2: no GLIBC_ symbol versions found (not a dynamic glibc binary?)"
  [ "$(printf '%s\n%s\n' "$floor" "$glibc_floor" | sort -V | tail -n1)" = "$glibc_floor" ] ||
    fail "$2 needs glibc $floor, above the documented floor $glibc_floor (README)"
}
# check_static BINARY: no program interpreter and no shared library needed (a static musl binary
# runs on any aarch64 Linux; README "Boards, targets and footprint"). Static-pie would pass too.
check_static() {
  local headers
  headers=$(readelf -ldW "$1") || fail "$1: readelf failed"
  ! grep -q 'Requesting program interpreter' <<<"$headers" || fail "$1 has a program interpreter (not static)"
  ! grep -q '(NEEDED)' <<<"$headers" || fail "$1 needs shared libraries (not static)"
  echo "$1: static, no interpreter ($(file -b "$1" | grep -oE "statically linked|static-pie linked"))"
}
# Packaged glibc targets: glibc floor and a Debian package (armhf is the Thumb-2 NEON build);
# other glibc targets: glibc floor, no package (ARM-mode armv7 for boards without NEON); static
# targets: no interpreter, no package.
targets=(aarch64-unknown-linux-gnu thumbv7neon-unknown-linux-gnueabihf)
unpackaged_targets=(armv7-unknown-linux-gnueabihf)
static_targets=(aarch64-unknown-linux-musl)
all_targets=("${targets[@]}" "${unpackaged_targets[@]}" "${static_targets[@]}")
cargo_deb_version=3.8.0

step "packages: Debian cross compilers, qemu-user, dpkg-dev (dpkg-shlibdeps for the package's Depends)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
  libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user dpkg-dev >/dev/null
rustup target add "${all_targets[@]}"
if [ "$(cargo deb --version 2>/dev/null | awk '{print $NF}')" != "$cargo_deb_version" ]; then
  nice cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

for t in "${all_targets[@]}"; do
  step "release build $t (cross/build.sh)"
  bin=$(cross/build.sh "$t")
  [ "$bin" = "target/$t/release/defender-agent" ] || fail "cross/build.sh printed $bin"
done

step "native release build (validates the ARM reports; packaged for amd64 below)"
cargo build --release --locked

step "footprint budget (stripped release binary), glibc floor or static"
for t in "${all_targets[@]}"; do
  bin=target/$t/release/defender-agent
  size=$(stat -c %s "$bin")
  echo "$t: $size bytes (budget ${budget[$t]})"
  [ "$size" -le "${budget[$t]}" ] || fail "$bin is $size bytes, over the budget of ${budget[$t]} (README)"
  # strip = true in [profile.release]: a symbol table here means the profile lost it.
  ! "${objdump[$t]}" -h "$bin" | grep -qw '\.symtab' || fail "$bin is not stripped"
  if [[ " ${static_targets[*]} " == *" $t "* ]]; then check_static "$bin"; else check_floor "${objdump[$t]}" "$bin"; fi
done

step "report + validate for each ARM binary under qemu-user, and by the native binary"
out=$(mktemp -d)
for t in "${all_targets[@]}"; do
  read -ra run <<<"${runner[$t]}"
  bin=target/$t/release/defender-agent
  # Under qemu-user, netlink sock_diag fails (EPROTONOSUPPORT): sockets = "auto" falls back to
  # /proc/net, which is what this exercises on the ARM binary.
  "${run[@]}" "$bin" report --format json >"$out/$t.json" || fail "$t: report failed"
  "${run[@]}" "$bin" validate "$out/$t.json" || fail "$t: validate rejected its own report"
  "${run[@]}" "$bin" report --format cbor --keys short --output "$out/$t.cbor" || fail "$t: CBOR report failed"
  "${run[@]}" "$bin" validate "$out/$t.cbor" || fail "$t: validate rejected its own CBOR report"
  for f in "$out/$t.json" "$out/$t.cbor"; do
    target/release/defender-agent validate "$f" || fail "$t: the native validate rejected $f"
  done
  echo "$t: report ($(stat -c %s "$out/$t.json") bytes JSON, $(stat -c %s "$out/$t.cbor") bytes CBOR) validates"
done

step "library tests for aarch64 under qemu-user"
# Run by cross/linkers.toml's runner; every library test runs (none needs netlink today). What
# qemu-user cannot do, and where the tests that need it live instead (native only):
#   - netlink sock_diag: socket(AF_NETLINK, NETLINK_SOCK_DIAG) gives EPROTONOSUPPORT under qemu-user;
#     the live-socket tests are integration tests (tests/integration/collect.rs). A library test
#     that needs it must skip itself when DEFENDER_AGENT_UNDER_QEMU=1, saying so.
#   - running the agent binary: tests/integration spawns it through CARGO_BIN_EXE_*, which exits
#     127 from a qemu-run test unless binfmt_misc is registered; so the integration tests are not
#     run here (the ARM binaries are exercised by `report` + `validate` above instead).
DEFENDER_AGENT_UNDER_QEMU=1 nice cargo --config cross/linkers.toml test --lib --locked \
  --target aarch64-unknown-linux-gnu

step "each ARM daemon under qemu-user against mosquitto over mutual TLS"
# The native test binary drives the ARM agent through a wrapper (qemu forwards SIGTERM/SIGKILL to
# the emulated process): it connects over mTLS, publishes, gets answers, and stops cleanly. About
# 6 s per target once the test binary is built (Thumb-2 armhf, ARM-mode armv7, aarch64 glibc and musl).
for t in "${all_targets[@]}"; do
  echo "--- $t"
  wrapper=$(mktemp -d)/defender-agent-$t
  printf '#!/bin/sh\nexec %s %s "$@"\n' "${runner[$t]}" "$PWD/target/$t/release/defender-agent" >"$wrapper"
  chmod +x "$wrapper"
  DEFENDER_AGENT_BIN=$wrapper PATH="$PATH:/usr/sbin" cargo test --locked --test integration -- \
    agent::reports_in_json_with_long_keys_arrive_validate_and_are_accepted \
    agent::reports_in_cbor_with_short_keys_arrive_validate_and_are_accepted \
    agent::sigterm_disconnects_cleanly_and_exits_zero_within_the_timeout \
    agent::sd_notify_says_ready_status_watchdog_and_stopping
done

step "Debian packages: amd64 (native release build), arm64, armhf (Thumb-2 NEON; the binaries above)"
check_floor objdump target/release/defender-agent
rm -f target/debian/defender-agent_*.deb target/*/debian/defender-agent_*.deb
deb=$(cross/deb.sh x86_64-unknown-linux-gnu)
.ci/deb-check.sh "$deb" amd64
for t in "${targets[@]}"; do
  deb=$(cross/deb.sh "$t")
  .ci/deb-check.sh "$deb" "${debarch[$t]}"
  [ "$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/defender-agent | cmp - "target/$t/release/defender-agent" && echo same)" = same ] ||
    fail "$deb does not hold target/$t/release/defender-agent"
done

step "fleet done"
