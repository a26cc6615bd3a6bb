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
# No shared mutable state, threads or clocks in disguise: time is an
# argument (`Now`), so a lock, an atomic or a callback that returns the time
# means a machine reads a clock or shares state behind its caller's back.
# Comment lines are skipped so docs may name what is refused.
refuse() { # refuse WHAT REGEX
  if hits=$(grep -rnE "$2" core/src | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'); then
    echo "arch-guard: core/src must not use $1:" >&2
    echo "$hits" >&2
    fail=1
  fi
}
refuse "locks (Mutex, RwLock)" '\b(Mutex|RwLock|MutexGuard|RwLock(Read|Write)Guard)\b'
refuse "atomics" 'std::sync::atomic|\bAtomic(Bool|U8|U16|U32|U64|Usize|I8|I16|I32|I64|Isize|Ptr)\b'
refuse "threads" 'std::thread|\bthread::(spawn|scope|sleep|Builder)'
refuse "clock callbacks (a Fn that returns a time)" '(dyn|impl)[[:space:]]+Fn(Mut|Once)?[[:space:]]*\([^)]*\)[[:space:]]*->[[:space:]]*([A-Za-z_][A-Za-z0-9_]*::)*(u64|i64|u128|SystemTime|Instant|Duration|Now|UnixTime)\b|\bfn[[:space:]]*\(\)[[:space:]]*->[[:space:]]*([A-Za-z_][A-Za-z0-9_]*::)*(SystemTime|Instant|Now|UnixTime)\b'
# No import runs between the roles: server/, classic/ and client/ share
# only the neutral `machine` module (and the protocol modules below them).
role_imports() { # role_imports DIR OTHER
  if hits=$(grep -rnE "crate::$2\b" "core/src/$1"); then
    echo "arch-guard: core/src/$1 must not name crate::$2 (share through crate::machine):" >&2
    echo "$hits" >&2
    fail=1
  fi
}
role_imports server classic
role_imports classic server
role_imports client server
role_imports client classic
role_imports server client
role_imports classic client
if [ "$fail" -ne 0 ]; then exit 1; fi
echo "arch-guard: rcf-core is free of runtimes, I/O, clocks, locks, atomics, threads and role-crossing imports ($(wc -l <<<"$tree") crates checked)"
