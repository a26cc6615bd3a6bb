//! rcf-agent `--protocol classic` against the real cf-serverd 3.21 and
//! rcf-serverd, both with `allowlegacyconnects`. Loopback only; fails when
//! the CFEngine binaries are missing.

use rcf_conformance::lab::*;

fn against(server_is_real: bool) {
    require_cfengine().unwrap();
    let tag = if server_is_real { "real" } else { "rcf" };
    let srv_wd = Workdir::new(&format!("aclassic-{tag}-srv")).unwrap();
    let cli = Workdir::new(&format!("aclassic-{tag}-cli")).unwrap();
    srv_wd.cf_key().unwrap();
    cli.cf_key().unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let mut p = ServerPolicy::new(0).admit(data.share_path(""));
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    let (hp, _real, _ours);
    if server_is_real {
        let s = RealServer::start(&srv_wd, &p).unwrap();
        hp = s.host_port();
        _real = Some(s);
        _ours = None;
    } else {
        let s = RcfServer::start(&srv_wd, &p).unwrap();
        hp = s.host_port();
        _ours = Some(s);
        _real = None;
    }
    let out = cli.scratch().join("out");
    let o = |n: &str| out.join(n).to_string_lossy().into_owned();
    // First contact: the key is unknown, so --trustkey is needed (SAUTH n).
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            &data.share_path("hello.txt"),
            &o("hello.txt"),
        ],
    )
    .unwrap();
    assert!(
        !run.success(),
        "{tag}: an unknown classic server key must need --trustkey\n{}",
        run.describe()
    );
    run.assert_contains("trustkey = false");
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--trustkey",
            &data.share_path("hello.txt"),
            &o("hello.txt"),
        ],
    )
    .unwrap();
    assert!(run.success(), "{tag}: {}", run.describe());
    trees_equal(&data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    let srv_id = srv_wd.key_id().unwrap();
    assert!(
        cli.trusted_keys().contains(&format!("root-{srv_id}.pub")),
        "{tag}: {:?}",
        cli.trusted_keys()
    );
    // Known key now (SAUTH y): encrypted, no --trustkey.
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--encrypt",
            &data.share_path("big.bin"),
            &o("big.bin"),
        ],
    )
    .unwrap();
    assert!(run.success(), "{tag}: {}", run.describe());
    trees_equal(&data.share.join("big.bin"), &out.join("big.bin")).unwrap();
    // A recursive tree with digest compare, encrypted.
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--encrypt",
            "--recurse",
            "--compare",
            "digest",
            &data.share_path("tree"),
            &o("tree"),
        ],
    )
    .unwrap();
    assert!(run.success(), "{tag}: {}", run.describe());
    trees_equal(&data.share.join("tree"), &out.join("tree")).unwrap();
}

#[test]
fn rcf_agent_classic_against_the_real_cf_serverd() {
    against(true);
}

#[test]
fn rcf_agent_classic_against_rcf_serverd() {
    against(false);
}
