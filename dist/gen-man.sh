#!/bin/sh
# Writes the man pages of rcf-serverd, rcf-agent and rcf-key into OUTDIR
# (default dist/man), each rendered by the binary's hidden `--man` flag
# from its clap definition (clap_mangen, through rcf-cli).
#
# Usage: dist/gen-man.sh [OUTDIR]
#   Regenerates the committed pages after a flag changes (a unit test in
#   each binary fails while dist/man/ differs from its CLI). Without
#   $RCF_BIN_DIR the binaries are built and run with `cargo run`; with it
#   (packaging), the binaries there are used.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/man}
mkdir -p "$out"
for name in rcf-serverd rcf-agent rcf-key; do
    if [ -n "${RCF_BIN_DIR:-}" ]; then
        "$RCF_BIN_DIR/$name" --man > "$out/$name.8.tmp"
    else
        cargo run -q --manifest-path "$here/../Cargo.toml" -p "$name" -- --man > "$out/$name.8.tmp"
    fi
    mv "$out/$name.8.tmp" "$out/$name.8"
    echo "$out/$name.8"
done
