#!/usr/bin/env bash
# Package a binary built by cross/build.sh as a Debian package (cargo-deb), for a board:
#   cross/deb.sh aarch64-unknown-linux-gnu            # arm64
#   cross/deb.sh thumbv7neon-unknown-linux-gnueabihf  # armhf (Thumb-2 + NEON: every ARMv7 Raspberry Pi)
#   cross/deb.sh armv7-unknown-linux-gnueabihf        # armhf, ARM code (ARMv7 boards without NEON)
#   cross/deb.sh x86_64-unknown-linux-gnu             # amd64 (target/release)
# Prints the path of the .deb. Needs `cargo install cargo-deb --locked` and the binary already built.
# cargo-deb 3.8 names the Debian architecture of every thumb* triple "armel"; a gnueabihf binary
# is armhf, so the Thumb-2 binary is packaged from a staging target directory laid out as the
# armv7 gnueabihf triple (same ABI, same linker, same glibc floor).
set -euo pipefail
target=${1:?usage: cross/deb.sh <target-triple>}
cd "$(dirname "$0")/.."
case "$target" in
  x86_64-unknown-linux-gnu)
    [ -x target/release/defender-agent ] || { echo "cross/deb.sh: build first: cargo build --release" >&2; exit 2; }
    cargo deb --no-build --locked | tail -n1 ;;
  aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf)
    [ -x "target/$target/release/defender-agent" ] || { echo "cross/deb.sh: build first: cross/build.sh $target" >&2; exit 2; }
    cargo deb --no-build --locked --target "$target" | tail -n1 ;;
  thumbv7neon-unknown-linux-gnueabihf)
    bin=target/$target/release/defender-agent
    [ -x "$bin" ] || { echo "cross/deb.sh: build first: cross/build.sh $target" >&2; exit 2; }
    stage=target/deb-stage-$target
    rm -rf "$stage" && mkdir -p "$stage/armv7-unknown-linux-gnueabihf/release"
    cp "$bin" "$stage/armv7-unknown-linux-gnueabihf/release/defender-agent"
    CARGO_TARGET_DIR=$stage cargo deb --no-build --locked --target armv7-unknown-linux-gnueabihf | tail -n1 ;;
  *) echo "cross/deb.sh: no package for $target (aarch64-unknown-linux-musl is a static binary: copy it)" >&2; exit 2 ;;
esac
