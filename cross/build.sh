#!/usr/bin/env bash
# Build a release binary of defender-agent for a board, without Docker:
#   cross/build.sh aarch64-unknown-linux-gnu     # Pi 3/4/5, 64-bit OS
#   cross/build.sh thumbv7neon-unknown-linux-gnueabihf # Pi 2/3/4/5, Zero 2 W, 32-bit OS (the armhf build)
#   cross/build.sh armv7-unknown-linux-gnueabihf # ARMv7 boards without NEON, 32-bit OS
#   cross/build.sh aarch64-unknown-linux-musl    # static, any aarch64 Linux
# Installs the Debian cross toolchain and the Rust target when missing (needs root or sudo for
# apt). Prints the path of the stripped binary. With Docker available, the `cross` tool does the
# same: CROSS_CONFIG=cross/Cross.toml cross build --release --target <triple>.
set -euo pipefail
target=${1:?usage: cross/build.sh <target-triple>}
cd "$(dirname "$0")/.."

case "$target" in
  aarch64-unknown-linux-gnu|aarch64-unknown-linux-musl) pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross); cc=aarch64-linux-gnu-gcc ;;
  armv7-unknown-linux-gnueabihf|thumbv7neon-unknown-linux-gnueabihf) pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross); cc=arm-linux-gnueabihf-gcc ;;
  x86_64-unknown-linux-gnu) pkgs=(); cc=cc ;;
  *) echo "cross/build.sh: unsupported target $target (see cross/Cross.toml for the cross tool)" >&2; exit 2 ;;
esac

if ! command -v "$cc" >/dev/null 2>&1 && [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  echo "cross/build.sh: installing ${pkgs[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
if [ "$target" != x86_64-unknown-linux-gnu ] && ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target" >&2
fi

cargo --config cross/linkers.toml build --release --locked --target "$target" >&2
echo "target/$target/release/defender-agent"
