#!/bin/sh
# Writes the man pages of rcf-serverd, rcf-agent and rcf-key into OUTDIR
# (default dist/man), generated from their command-line definitions:
#   * a binary with the hidden `--man` flag (clap_mangen over its clap
#     definition; rcf-serverd has it) prints its own page;
#   * otherwise the page is built from its `--help` text (so a CLI still in
#     flux, like rcf-agent's, always gets a current page).
# Usage: dist/gen-man.sh [OUTDIR] ; binaries from $RCF_BIN_DIR, else
# target/release, else target/debug, else $PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/man}
mkdir -p "$out"
find_bin() {
    for d in "${RCF_BIN_DIR:-}" "${CARGO_TARGET_DIR:-$here/../target}/release" "${CARGO_TARGET_DIR:-$here/../target}/debug"; do
        if [ -n "$d" ] && [ -x "$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    command -v "$1" || { echo "gen-man.sh: $1 not found (build it, or set RCF_BIN_DIR)" >&2; return 1; }
}
from_help() { # name section binary
    name=$1; sec=$2; bin=$3
    upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
    version=$("$bin" --version 2>/dev/null | head -n1 || echo "$name")
    help=$("$bin" --help)
    summary=$(printf '%s\n' "$help" | head -n1 | sed 's/\\/\\e/g')
    {
        printf '.TH %s %s "" "%s" "System Administration"\n' "$upper" "$sec" "$version"
        printf '.SH NAME\n%s \\- %s\n' "$name" "$summary"
        printf '.SH DESCRIPTION\n.nf\n'
        printf '%s\n' "$help" | tail -n +2 | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
        printf '.fi\n'
        printf '.SH SEE ALSO\nrcf-serverd(8), rcf-agent(8), rcf-key(8)\n'
    } > "$out/$name.$sec"
}
for name in rcf-serverd rcf-agent rcf-key; do
    bin=$(find_bin "$name")
    if "$bin" --man > "$out/$name.8.tmp" 2>/dev/null && head -n5 "$out/$name.8.tmp" | grep -q '^\.TH'; then
        mv "$out/$name.8.tmp" "$out/$name.8"
    else
        rm -f "$out/$name.8.tmp"
        from_help "$name" 8 "$bin"
    fi
    echo "$out/$name.8"
done
