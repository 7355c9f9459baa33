#!/usr/bin/env bash
# Check a defender-agent Debian package: the files are where systemd/defender-agent.service expects
# them, the configuration is a conffile readable by the agent's group only, the maintainer scripts
# create the user and do not start the unit, and the packaged binary (run under qemu-user for ARM)
# accepts the packaged configuration.
#   .ci/deb-check.sh target/debian/defender-agent_0.1.0-1_arm64.deb arm64
# Extracts with dpkg-deb into a scratch directory; never installs into this machine.
set -euo pipefail
deb=${1:?usage: .ci/deb-check.sh <package.deb> <amd64|arm64|armhf>}
arch=${2:?usage: .ci/deb-check.sh <package.deb> <amd64|arm64|armhf>}
fail() { echo "deb-check $deb: $*" >&2; exit 1; }
deb=$(realpath "$deb")
cd "$(dirname "$0")/.."

# ELF e_machine (offset 18, little endian) and how to run a binary of that architecture here.
case "$arch" in
  amd64) machine=62; run=() ;;
  arm64) machine=183; run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
  armhf) machine=40; run=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
  *) fail "unknown architecture $arch" ;;
esac

[ "$(dpkg-deb -f "$deb" Package)" = defender-agent ] || fail "Package is not defender-agent"
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "Architecture is $(dpkg-deb -f "$deb" Architecture), expected $arch"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
# The floor README promises and .ci/fleet.sh measures.
grep -qF 'libc6 (>= 2.34)' <<<"$depends" || fail "Depends lacks libc6 (>= 2.34)"
grep -q 'adduser' <<<"$depends" || fail "Depends lacks adduser (postinst creates the user)"

# Contents: "perms owner/group size date time ./path" per line.
listing=$(dpkg -c "$deb")
echo "$listing"
has() { # has MODE PATH
  grep -qE "^$1 (root/root|0/0) .* \./${2#/}\$" <<<"$listing" || fail "no $2 with mode $1 owned by root"
}
has '-rwxr-xr-x' /usr/bin/defender-agent
has '-rw-r-----' /etc/defender-agent/agent.toml
has '-rw-r--r--' /usr/share/doc/defender-agent/README.md
has '-rw-r--r--' /usr/share/doc/defender-agent/copyright
unit=$(grep -oE '\./(usr/)?lib/systemd/system/defender-agent\.service$' <<<"$listing") ||
  fail "no defender-agent.service under /lib/systemd/system or /usr/lib/systemd/system"
has '-rw-r--r--' "${unit#.}"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root/fs"
dpkg-deb -e "$deb" "$root/control"

# Every absolute path the unit runs or reads is in the package.
for p in $(grep -E '^Exec[A-Za-z]*=' "$root/fs/${unit#./}" | grep -oE '/[^ ]+' | grep -E '^/(usr|etc)/' | sort -u); do
  [ -e "$root/fs$p" ] || fail "the unit references $p, which the package does not install"
done
cmp -s systemd/defender-agent.service "$root/fs/${unit#./}" || fail "packaged unit differs from systemd/defender-agent.service"

# The configuration is a conffile (kept on upgrade when the operator edited it), listed once.
[ "$(grep -cx /etc/defender-agent/agent.toml "$root/control/conffiles")" = 1 ] ||
  fail "conffiles must list /etc/defender-agent/agent.toml exactly once: $(cat "$root/control/conffiles")"

# Maintainer scripts: the user is created, the unit is reloaded but neither enabled nor started on
# install (the operator does that once the certificates are in place).
for s in postinst postrm; do
  [ -x "$root/control/$s" ] || fail "no executable $s"
  sh -n "$root/control/$s" || fail "$s: shell syntax error"
  ! grep -q '#DEBHELPER#' "$root/control/$s" || fail "$s: the debhelper token was not replaced"
  # cargo-deb replaces the token wherever it stands, also inside a comment, which would make its
  # fragment run in the wrong place.
  ! grep -qE '.+# Automatically added by cargo-deb' "$root/control/$s" || fail "$s: a fragment was inserted mid-line"
done
grep -q 'useradd --system\|adduser --system' "$root/control/postinst" || fail "postinst creates no system user"
# cargo-deb's "dont-enable" fragment only re-enables a unit the operator had enabled (upgrades).
grep -q 'deb-systemd-helper debian-installed defender-agent.service' "$root/control/postinst" ||
  fail "postinst enables the unit on install"
grep -q 'chown root:"\$user" "\$conf_dir/agent.toml"' "$root/control/postinst" || fail "postinst does not give the config to the agent's group"
! grep -qE 'deb-systemd-invoke (start|\$_dh_action)' "$root/control/postinst" || fail "postinst starts the unit on install"
grep -q 'rm -rf /var/lib/defender-agent' "$root/control/postrm" || fail "postrm purge keeps the state directory"

# The packaged binary is for $arch, runs, and accepts the packaged configuration, which is its own
# built-in example.
bin="$root/fs/usr/bin/defender-agent"
m=$(od -An -tu2 -j18 -N2 "$bin" | tr -d ' ')
[ "$m" = "$machine" ] || fail "binary ELF machine $m, expected $machine ($arch)"
"${run[@]}" "$bin" print-example-config | cmp -s - "$root/fs/etc/defender-agent/agent.toml" ||
  fail "packaged agent.toml differs from the binary's print-example-config"
# --no-deployment: the packaged certificate paths are placeholders until the operator fills them.
"${run[@]}" "$bin" check-config --no-deployment --config "$root/fs/etc/defender-agent/agent.toml" >/dev/null ||
  fail "the packaged agent.toml does not pass check-config"
echo "deb-check $deb ($arch): OK"
