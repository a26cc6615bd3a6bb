//! Every recorded vector replayed through the core's codecs.
//!
//! Fails (never skips) when the vectors are missing: CI lays out
//! `shared/` beside the checkout, and a conformance suite that silently
//! checks nothing is worse than none.

use rcf_conformance::{runner, transcript};

fn all() -> Vec<transcript::Transcript> {
    let dir = transcript::vectors_dir();
    let v = transcript::load_all(&dir)
        .unwrap_or_else(|e| panic!("cannot load vectors from {}: {e}", dir.display()));
    assert!(
        v.len() >= 30,
        "expected the recorded vector set in {}, found {}",
        dir.display(),
        v.len()
    );
    v
}

#[test]
fn every_vector_replays_clean_through_the_core() {
    let mut total = 0;
    for t in all() {
        let rep = runner::check_codec(&t);
        assert!(rep.failures.is_empty(), "{}: {:#?}", t.name, rep.failures);
        assert!(rep.checks > 0, "{}: no checks ran", t.name);
        total += rep.checks;
    }
    eprintln!("{total} codec checks passed");
}

fn report(name: &str) -> runner::Report {
    let t = all()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("vector {name} missing"));
    let rep = runner::check_codec(&t);
    assert!(rep.failures.is_empty(), "{name}: {:#?}", rep.failures);
    rep
}

#[test]
fn banner_and_version_vectors() {
    for name in ["version-v2", "version-cmd"] {
        let r = report(name);
        assert!(
            r.covers("banner") && r.covers("welcome"),
            "{name}: {:?}",
            r.covered
        );
    }
    assert!(report("version-cmd").covers("reply-version"));
    // v1 inside TLS, v4 and garbage: the server hangs up and so must the core.
    for name in [
        "version-v1-refused",
        "version-v4-too-new",
        "version-garbage",
    ] {
        let r = report(name);
        assert!(r.covers("refusal"), "{name}: {:?}", r.covered);
    }
}

#[test]
fn identity_vectors() {
    assert!(report("identity-no-username").covers("welcome"));
    assert!(report("identity-bad-user").covers("refusal"));
    assert!(report("untrusted-key").covers("identity-trust-note"));
}

#[test]
fn bad_command_vector() {
    let r = report("bad-command");
    assert!(
        r.covers("request-parse") && r.covers("reply-request-denied"),
        "{:?}",
        r.covered
    );
}

#[test]
fn command_vectors_cover_stat_opendir_md5_get_exec() {
    assert!(report("stat-get-ok").covers("reply-stat"));
    assert!(report("stat-get-ok").covers("get-data"));
    assert!(report("get-denied").covers("get-refusal"));
    assert!(report("opendir-ok").covers("reply-opendir"));
    assert!(report("opendir-multi").covers("reply-opendir"));
    assert!(report("md5-same").covers("reply-md5"));
    assert!(report("md5-differs").covers("reply-md5"));
    assert!(report("exec-ok").covers("reply-exec"));
    assert!(report("classic-copy-file").covers("classic-handshake"));
}

/// Vectors whose server side was the real cf-serverd over TLS, replayed
/// against the core session, EXEC included.
#[test]
fn server_vectors_replay_against_the_core_session() {
    let mut replayed = Vec::new();
    for t in all() {
        if !t.server_is_authoritative() || !t.is_tls() {
            continue;
        }
        match rcf_conformance::session_replay::replay(&t) {
            Ok(n) => {
                assert!(n > 0, "{}: nothing compared", t.name);
                replayed.push(t.name.clone());
            }
            Err(m) => panic!("{}: {}", m.name, m.what),
        }
    }
    eprintln!("replayed against the session: {replayed:?}");
    assert!(replayed.len() >= 26, "{replayed:?}");
    assert!(
        replayed.contains(&"exec-ok".to_string())
            && replayed.contains(&"exec-denied-class".to_string())
    );
}
