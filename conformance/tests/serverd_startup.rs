//! rcf-serverd's start-up checks: refusals in one line naming the path,
//! quick start still making a key, no warnings for settings the admin did
//! not write, and a port in use named with its address.

use std::path::Path;
use std::process::{Command, Output};

fn serverd(args: &[&str]) -> Output {
    let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
    Command::new("timeout")
        .arg("3")
        .arg(bin)
        .args(["--no-fork", "--bind", "127.0.0.1"])
        .args(args)
        .env_remove("CFENGINE_TEST_OVERRIDE_WORKDIR")
        .output()
        .expect("run rcf-serverd")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

/// Refused with exit 1 and exactly one error line that names `path`.
fn assert_refused(o: &Output, path: &Path) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "should refuse to start:\n{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{e}");
    assert!(errors[0].contains(&path.display().to_string()), "{e}");
}

/// Starts on a fresh work dir (key made), then refuses each broken key setup.
#[test]
fn startup_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("wd");
    std::fs::create_dir_all(wd.join("masterfiles")).unwrap();
    let w = wd.to_str().unwrap();
    let port = free_port();

    // quick start: a key is made, and no warning about built-in defaults
    let o = serverd(&["--workdir", w, "--port", &port]);
    let e = stderr(&o);
    assert!(wd.join("ppkeys/localhost.priv").exists(), "{e}");
    assert!(e.contains("Server is starting"), "{e}");
    assert!(
        !e.contains("warning"),
        "warnings for settings nobody wrote:\n{e}"
    );

    // a mistyped --workdir is refused, and not created
    let typo = tmp.path().join("wdd");
    let o = serverd(&["--workdir", typo.to_str().unwrap(), "--port", &port]);
    assert_refused(&o, &typo);
    assert!(!typo.exists());

    // mismatched localhost.pub
    let pubp = wd.join("ppkeys/localhost.pub");
    let good_pub = std::fs::read(&pubp).unwrap();
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("masterfiles")).unwrap();
    serverd(&["--workdir", other.to_str().unwrap(), "--port", &port]);
    std::fs::copy(other.join("ppkeys/localhost.pub"), &pubp).unwrap();
    let o = serverd(&["--workdir", w, "--port", &port]);
    assert_refused(&o, &pubp);

    // missing localhost.pub
    std::fs::remove_file(&pubp).unwrap();
    let o = serverd(&["--workdir", w, "--port", &port]);
    assert_refused(&o, &pubp);
    std::fs::write(&pubp, &good_pub).unwrap();

    // unreadable (garbage) private key
    let privp = wd.join("ppkeys/localhost.priv");
    let good_priv = std::fs::read(&privp).unwrap();
    std::fs::write(&privp, b"not a key\n").unwrap();
    let o = serverd(&["--workdir", w, "--port", &port]);
    assert_refused(&o, &privp);
    std::fs::write(&privp, &good_priv).unwrap();

    // a port in use is named with its address
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = l.local_addr().unwrap().port().to_string();
    let o = serverd(&["--workdir", w, "--port", &busy]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{busy}")), "{e}");
}

/// cf-serverd's options: FILE as an argument, `-l` timestamps in its
/// format, `-x`, `-C`, `-L` accepted, `-t N` stopping on SIGHUP.
#[test]
fn cf_serverd_options() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("wd");
    std::fs::create_dir_all(wd.join("inputs")).unwrap();
    let port = free_port();
    let pf = wd.join("inputs/site.cf");
    std::fs::write(
        &pf,
        format!(
            "body common control {{ bundlesequence => {{ \"main\" }}; }}\nbundle agent main {{ }}\nbody server control {{ port => \"{port}\"; allowconnects => {{ \"127.0.0.1\" }}; }}\n"
        ),
    )
    .unwrap();
    let w = wd.to_str().unwrap();
    let o = serverd(&[
        "--workdir",
        w,
        "-l",
        "-x",
        "-C",
        "never",
        "-L",
        "/nonexistent",
        pf.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(
        e.contains(&format!("policy '{}'", pf.display())),
        "FILE argument not used:\n{e}"
    );
    let line = e
        .lines()
        .find(|l| l.contains("Server is starting"))
        .unwrap();
    // 2026-12-07T04:17:27+0000   notice: ...
    let ts = &line[..24];
    assert!(
        ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b'T'
            && (ts.contains('+') || ts[19..].starts_with('-')),
        "not cf-serverd's timestamp: {line}"
    );
    assert_eq!(&line[24..26], "  ", "{line}");

    // -t: SIGHUP stops the server instead of reloading it
    let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
    let mut child = Command::new(bin)
        .args([
            "--no-fork",
            "--bind",
            "127.0.0.1",
            "-t",
            "2",
            "--workdir",
            w,
        ])
        .arg(&pf)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling the child we started, by its PID.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("-t: still running 10 s after SIGHUP");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(st.success(), "{err}");
    assert!(err.contains("Server is stopping"), "{err}");
}
