#!/bin/sh
# Builds rcf_<version>_<arch>.deb with dpkg-deb (no cargo-deb needed).
# Usage: dist/build-deb.sh [OUTDIR]          (default: target/debian)
#   RCF_BIN_DIR=DIR   take the three binaries from DIR instead of building
#                     them (cargo build --release --locked)
# Contents: /usr/bin/{rcf-serverd,rcf-agent,rcf-key}, the systemd units in
# /lib/systemd/system (not enabled), man pages, /etc/default/rcf-serverd
# (a conffile), and a postinst that creates /var/lib/cfengine3's layout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$root/target/debian}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
arch=$(dpkg --print-architecture)
if [ -z "${RCF_BIN_DIR:-}" ]; then
    (cd "$root" && cargo build --release --locked -p rcf-serverd -p rcf-agent -p rcf-key)
    RCF_BIN_DIR=${CARGO_TARGET_DIR:-$root/target}/release
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/rcf
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/usr/share/man/man8" \
    "$pkg/usr/share/doc/rcf" "$pkg/etc/default"
for b in rcf-serverd rcf-agent rcf-key; do
    install -m 0755 "$RCF_BIN_DIR/$b" "$pkg/usr/bin/$b"
    # release builds keep line tables (profile.release debug = 1): drop them
    if command -v strip >/dev/null 2>&1; then strip --strip-debug "$pkg/usr/bin/$b"; fi
done
install -m 0644 "$here"/systemd/*.service "$here"/systemd/*.socket "$here"/systemd/*.timer "$pkg/lib/systemd/system/"
RCF_BIN_DIR=$RCF_BIN_DIR "$here/gen-man.sh" "$stage/man" >/dev/null
for m in "$stage"/man/*.8; do
    gzip -9n < "$m" > "$pkg/usr/share/man/man8/$(basename "$m").gz"
done
cat > "$pkg/etc/default/rcf-serverd" <<'EOD'
# Extra flags for rcf-serverd (systemd: rcf-serverd.service).
# Examples: "--metrics 127.0.0.1:9308", "--trust-max-new 10 --trust-window 3600",
#           "-f /var/lib/cfengine3/inputs/promises.cf -I"
RCF_SERVERD_OPTS=""
EOD
cat > "$pkg/usr/share/doc/rcf/copyright" <<'EOD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: rcf
License: GPL-3.0-or-later
 On Debian systems the full text is in /usr/share/common-licenses/GPL-3.
EOD
echo /etc/default/rcf-serverd > "$pkg/DEBIAN/conffiles"
size=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<EOD
Package: rcf
Version: $version
Architecture: $arch
Maintainer: rcf developers <rcf@localhost>
Installed-Size: $size
Depends: libc6
Suggests: systemd
Section: admin
Priority: optional
Description: memory-safe CFEngine 3.21 compatible server, agent and key tool
 rcf-serverd is a drop-in for cf-serverd (same flags, policy, ppkeys and
 wire protocol), rcf-agent fetches policy from a hub, rcf-key manages keys
 like cf-key. The systemd units are installed but not enabled.
EOD
cat > "$pkg/DEBIAN/postinst" <<'EOD'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    for d in /var/lib/cfengine3 /var/lib/cfengine3/inputs /var/lib/cfengine3/ppkeys \
             /var/lib/cfengine3/masterfiles /var/lib/cfengine3/outputs /var/lib/cfengine3/state; do
        [ -d "$d" ] || install -d -m 0700 "$d"
    done
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
fi
exit 0
EOD
cat > "$pkg/DEBIAN/prerm" <<'EOD'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop rcf-serverd.service rcf-serverd.socket rcf-agent-update.timer >/dev/null 2>&1 || true
fi
exit 0
EOD
cat > "$pkg/DEBIAN/postrm" <<'EOD'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOD
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/rcf_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
