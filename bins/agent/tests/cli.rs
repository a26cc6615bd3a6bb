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

/// Bootstrapping to itself with masterfiles that do not validate fails
/// before it changes anything, and says so in the log and in the JSON
/// result (exit 1, no policy_server.dat, no inputs).
#[test]
fn self_bootstrap_with_broken_masterfiles_fails_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let wd = tempfile::tempdir().unwrap();
    let ppkeys = wd.path().join("ppkeys");
    std::fs::create_dir(&ppkeys).unwrap();
    std::fs::set_permissions(&ppkeys, std::fs::Permissions::from_mode(0o700)).unwrap();
    let testdata =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../core/src/keys/testdata");
    std::fs::copy(testdata.join("cfkey.priv"), ppkeys.join("localhost.priv")).unwrap();
    std::fs::copy(testdata.join("cfkey.pub"), ppkeys.join("localhost.pub")).unwrap();
    std::fs::create_dir(wd.path().join("masterfiles")).unwrap();
    std::fs::write(
        wd.path().join("masterfiles/promises.cf"),
        "bundle agent main { this is not policy\n",
    )
    .unwrap();
    let out = agent()
        .args([
            "--json",
            "bootstrap",
            "--no-failsafe",
            "127.0.0.1",
            "--workdir",
        ])
        .arg(wd.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "Bootstrapping failed; policy_server.dat and inputs/ were left as they were",
        "\"ok\":false",
    ] {
        assert!(text.contains(needle), "no '{needle}' in:\n{text}");
    }
    assert!(!wd.path().join("policy_server.dat").exists());
    assert!(!wd.path().join("inputs/promises.cf").exists());
}
