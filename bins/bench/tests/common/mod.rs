//! What every rcf-bench test does first: run the binary and insist it
//! succeeded.

use std::process::Command;

/// Run `rcf-bench ARGS`; its stdout, or a panic with both streams when it
/// failed.
pub fn run_bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rcf-bench"))
        .args(args)
        .output()
        .expect("run rcf-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rcf-bench failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    stdout
}
