//! rcf-agent's command line, without any server: subcommands, usage errors,
//! distinct exit codes for the conditions scripts branch on. (Also makes
//! `cargo test --workspace` build the binary the interop tests run.)

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rcf-agent"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = agent().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["copy", "bootstrap", "update", "net"] {
        assert!(text.contains(sub), "--help does not list {sub}:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = agent().args(["copy", "/only-a-source"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent()
        .args([
            "copy",
            "--compare",
            "sometimes",
            "-H",
            "127.0.0.1",
            "/a",
            "/b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn update_without_a_bootstrap_fails_cleanly_and_writes_nothing() {
    let wd = tempfile::tempdir().unwrap();
    let out = agent()
        .args(["update", "--workdir"])
        .arg(wd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("policy_server.dat"),
        "the message should say what is missing:\n{text}"
    );
    assert!(!wd.path().join("inputs").exists());
}
