#!/usr/bin/env bash
# Architecture guard: rcf-core stays pure. Fails when its normal dependency
# tree pulls in an async runtime, or when core/src touches sockets, files,
# processes or clocks. Run from the workspace root.
set -euo pipefail
fail=0
tree=$(cargo tree -p rcf-core -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
for rt in tokio smol async-io async-std mio async-executor async-global-executor futures-executor glommio; do
  if grep -qx "$rt" <<<"$tree"; then
    echo "arch-guard: rcf-core's dependency tree contains the runtime '$rt':" >&2
    cargo tree -p rcf-core -e normal -i "$rt" >&2 || true
    fail=1
  fi
done
if hits=$(grep -rnE 'std::net|std::fs|std::process|Instant::now|SystemTime::now' core/src); then
  echo "arch-guard: core/src must not do I/O or read clocks:" >&2
  echo "$hits" >&2
  fail=1
fi
if [ "$fail" -ne 0 ]; then exit 1; fi
echo "arch-guard: rcf-core is free of runtimes, I/O and clocks ($(wc -l <<<"$tree") crates checked)"
