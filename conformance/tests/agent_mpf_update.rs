//! issue 19: `rcf-agent update` does what the masterfiles policy
//! framework's `update.cf` does. A differential test: the real MPF 3.21
//! (`/usr/share/cfengine3/masterfiles`) on a hub, a sequence of hub-side
//! changes (edit, add, delete, a module, a file name outside
//! `input_name_patterns`, an invalid policy, an unchanged and a changed
//! `cf_promises_validated`), and after every step `rcf-agent update` on one
//! client and the real `cf-agent -f update.cf` (bundle
//! `cfe_internal_update_policy_cpv`, which is what `update.cf` runs for the
//! policy) on another leave identical `inputs/` trees, having transferred
//! the same number of files, and identical `WORKDIR/modules` trees (with
//! modes: the MPF's `modules_presence`). Run with the real cf-serverd and with
//! rcf-serverd as the hub. The hub's stamp is written by
//! `cf-promises -T masterfiles`, as the hub's cf-agent does (only when the
//! policy is valid).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rcf_conformance::lab::{
    agent_workdirs, copy_tree, rcf_agent, require_cfengine, tree_entries, trees_equal, AccessRule,
    AnyServer, ServerKind, ServerPolicy, ToolRun, Workdir,
};

mod policy_lab;
use policy_lab::{cf_agent_update, private_bin};

const MPF: &str = "/usr/share/cfengine3/masterfiles";

/// Tag the hub's masterfiles with `cf_promises_validated` and
/// `cf_promises_release_id` when the policy is valid: `cf-promises -T` on
/// the CFEngine hub, `rcf-agent update` on the rcf hub.
fn stamp(hub: &Workdir, mf: &Path, kind: ServerKind) -> ToolRun {
    match kind {
        ServerKind::Real => rcf_conformance::lab::cf_promises_stamp(hub, mf).unwrap(),
        ServerKind::Rcf => rcf_agent(hub, &["-v", "update"]).unwrap(),
    }
}

/// `rcf-agent --json update`; returns the run and the number of files it
/// transferred (the summary's `copied`).
fn rcf_update(wd: &Workdir) -> (ToolRun, usize) {
    let run = rcf_agent(wd, &["--json", "-I", "update"]).unwrap();
    let json = run
        .output
        .lines()
        .find(|l| l.starts_with("{\"hub\""))
        .unwrap_or_else(|| panic!("no JSON summary\n{}", run.describe()))
        .to_string();
    let copied = json
        .split("\"copied\":[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .map(|l| {
            if l.is_empty() {
                0
            } else {
                l.matches("\",\"").count() + 1
            }
        })
        .unwrap();
    (run, copied)
}

struct Clients {
    hub: Workdir,
    rcf: Workdir,
    real: Workdir,
    mf: PathBuf,
}

fn step(c: &Clients, what: &str, kind: ServerKind, log: &str) {
    let (r1, n1) = rcf_update(&c.rcf);
    assert!(
        r1.success(),
        "[{kind:?}] {what}: rcf-agent update\n{}\n{log}",
        r1.describe()
    );
    let (r2, n2) = cf_agent_update(&c.real);
    assert!(
        r2.success(),
        "[{kind:?}] {what}: cf-agent\n{}",
        r2.describe()
    );
    if let Err(d) = trees_equal(&c.real.inputs(), &c.rcf.inputs()) {
        panic!(
            "[{kind:?}] {what}: inputs differ (left: cf-agent, right: rcf-agent): {d}\n{}\n{}",
            r1.describe(),
            r2.describe()
        );
    }
    // modules_presence: WORKDIR/modules, where the agent runs modules from.
    let (mr, mo) = (c.real.path().join("modules"), c.rcf.path().join("modules"));
    if let Err(d) = trees_equal(&mr, &mo) {
        panic!(
            "[{kind:?}] {what}: modules/ differ (left: cf-agent, right: rcf-agent): {d}\n{}\n{}",
            r1.describe(),
            r2.describe()
        );
    }
    let (modes_real, modes_rcf) = (modes(&mr), modes(&mo));
    assert_eq!(
        modes_real,
        modes_rcf,
        "[{kind:?}] {what}: modules/ modes, cf-agent vs rcf-agent\n{}\n{}",
        r1.describe(),
        r2.describe()
    );
    assert_eq!(
        n1,
        n2,
        "[{kind:?}] {what}: files transferred, rcf-agent vs cf-agent\n{}\n{}",
        r1.describe(),
        r2.describe()
    );
    eprintln!(
        "[agent_mpf_update] {kind:?} {what}: identical inputs/ and modules/ ({} entries), {n1} file(s) transferred by each",
        modes_real.len()
    );
}

/// Relative path -> mode bits of every entry under `root`.
fn modes(root: &Path) -> std::collections::BTreeMap<String, u32> {
    use std::os::unix::fs::PermissionsExt;
    tree_entries(root)
        .unwrap()
        .into_iter()
        .map(|(rel, m)| (rel, m.permissions().mode() & 0o7777))
        .collect()
}

fn differential(kind: ServerKind) {
    let t0 = Instant::now();
    require_cfengine().unwrap();
    let name = format!("mpf{kind:?}");
    let (hub, rcf) = agent_workdirs(&name).unwrap();
    let real = Workdir::new(&format!("{name}-real")).unwrap();
    real.cf_key().unwrap();
    private_bin(&real);
    private_bin(&rcf);
    let mf = hub.path().join("masterfiles");
    copy_tree(Path::new(MPF), &mf).unwrap();
    if kind == ServerKind::Rcf {
        // The hub is made a hub by bootstrapping to itself.
        let b = rcf_agent(&hub, &["-I", "bootstrap", "--no-failsafe", "127.0.0.1"]).unwrap();
        assert!(b.success(), "{}", b.describe());
        b.assert_contains("Assuming role as policy server");
        assert!(hub.path().join("state/am_policy_hub").is_file());
        assert_eq!(
            std::fs::read_to_string(hub.path().join("policy_server.dat")).unwrap(),
            "127.0.0.1\n"
        );
        trees_equal(&mf, &hub.inputs()).unwrap_or_else(|d| panic!("hub inputs: {d}"));
        let again = stamp(&hub, &mf, kind);
        assert!(again.success(), "{}", again.describe());
        assert!(
            again.contains("cf_promises_validated unchanged"),
            "an unchanged masterfiles must keep its stamp\n{}",
            again.describe()
        );
    } else {
        let st = stamp(&hub, &mf, kind);
        assert!(st.success(), "{}", st.describe());
    }
    let v = std::fs::read_to_string(mf.join("cf_promises_validated")).unwrap();
    assert!(
        v.starts_with("{\n  \"timestamp\": ") && v.ends_with("\n}"),
        "{v:?}"
    );
    assert!(mf.join("cf_promises_release_id").is_file());
    let mut rule = AccessRule::admit_loopback(mf.to_string_lossy().into_owned());
    rule.shortcut = Some("masterfiles".into());
    let mut p = ServerPolicy::new(0);
    p.access.push(rule);
    let srv = AnyServer::start(kind, &hub, &p).unwrap();
    let hp = srv.host_port();
    // Both clients start from the same bootstrapped state: the hub's
    // masterfiles in inputs/, its key trusted, policy_server.dat.
    for c in [&rcf, &real] {
        c.trust(&hub, "root").unwrap();
        copy_tree(&mf, &c.inputs()).unwrap();
        std::fs::write(c.path().join("policy_server.dat"), format!("{hp}\n")).unwrap();
    }
    let c = Clients { hub, rcf, real, mf };
    let log = || srv.log();
    step(&c, "unchanged stamp, nothing changed", kind, &log());
    let main = c.mf.join("services/main.cf");
    let edit = |f: &Path, text: &str| {
        let mut s = std::fs::read_to_string(f).unwrap_or_default();
        s.push_str(text);
        std::fs::write(f, s).unwrap();
    };
    let restamp = || {
        // A stamp holds a time in seconds: let the clock move on, so the
        // new stamp differs from the last (as it would between runs).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r = stamp(&c.hub, &c.mf, kind);
        assert!(r.success(), "{}", r.describe());
    };
    edit(&main, "\n# edited\n");
    restamp();
    step(&c, "edit", kind, &log());
    std::fs::write(c.mf.join("services/added.cf"), "bundle agent added { }\n").unwrap();
    restamp();
    step(&c, "add", kind, &log());
    std::fs::remove_file(c.mf.join("services/added.cf")).unwrap();
    restamp();
    step(&c, "delete", kind, &log());
    std::fs::write(
        c.mf.join("modules/rcf_test_module"),
        "#!/bin/sh\necho =x=y\n",
    )
    .unwrap();
    restamp();
    step(
        &c,
        "a module (no extension, copied by the unfiltered modules copy)",
        kind,
        &log(),
    );
    std::fs::write(
        c.mf.join("modules/rcf_test_module"),
        "#!/bin/sh\necho =x=z\n",
    )
    .unwrap();
    restamp();
    step(
        &c,
        "a changed module (WORKDIR/modules keeps a .cfsaved)",
        kind,
        &log(),
    );
    assert!(c
        .rcf
        .path()
        .join("modules/rcf_test_module.cfsaved")
        .is_file());
    std::fs::write(c.mf.join("NOTES.md"), "not policy\n").unwrap();
    std::fs::write(c.mf.join("services/README"), "not policy either\n").unwrap();
    edit(&main, "# and a real change\n");
    restamp();
    step(&c, "a non-matching file name", kind, &log());
    assert!(!c.rcf.inputs().join("NOTES.md").exists());
    // An invalid policy: the hub does not stamp it, so no client takes it.
    let good = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{good}\nbundle agent broken {{\n")).unwrap();
    let before = std::fs::read(c.mf.join("cf_promises_validated")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = stamp(&c.hub, &c.mf, kind);
    assert!(
        !r.success(),
        "the hub accepted a broken policy\n{}",
        r.describe()
    );
    assert_eq!(
        before,
        std::fs::read(c.mf.join("cf_promises_validated")).unwrap()
    );
    step(&c, "an invalid policy (stamp not renewed)", kind, &log());
    assert_eq!(
        std::fs::read_to_string(c.rcf.inputs().join("services/main.cf")).unwrap(),
        good,
        "the broken policy reached inputs/"
    );
    // Fixed, but not stamped yet: the gate holds.
    std::fs::write(&main, format!("{good}# fixed\n")).unwrap();
    step(&c, "a change without a new stamp", kind, &log());
    restamp();
    step(&c, "the change stamped", kind, &log());
    step(&c, "nothing new", kind, &log());
    srv.stop();
    eprintln!("[agent_mpf_update] {kind:?}: {:?} wall", t0.elapsed());
}

#[test]
fn mpf_update_matches_cf_agent_real_hub() {
    differential(ServerKind::Real);
}

#[test]
fn mpf_update_matches_cf_agent_rcf_hub() {
    differential(ServerKind::Rcf);
}

/// Keys are made once and kept whatever happens to the bootstrap; a
/// client bootstrapping to a hub on loopback is told nothing about "other
/// hosts"; a hub whose masterfiles do not validate is not made a hub.
#[test]
fn bootstrap_keys_roles_and_refusals() {
    let t0 = Instant::now();
    let (hub, cli) = agent_workdirs("bskeys").unwrap();
    let fresh = Workdir::new("bskeys-fresh").unwrap();
    assert!(!fresh.privkey_path().exists());
    let dead = format!("127.0.0.1:{}", rcf_conformance::lab::free_port());
    let r = rcf_agent(&fresh, &["bootstrap", "--no-failsafe", &dead]).unwrap();
    assert_eq!(r.code(), Some(3), "{}", r.describe());
    assert!(
        fresh.privkey_path().exists(),
        "the key made by a failed bootstrap is kept"
    );
    let key = std::fs::read(fresh.privkey_path()).unwrap();
    let r = rcf_agent(&fresh, &["bootstrap", "--no-failsafe", &dead]).unwrap();
    assert_eq!(r.code(), Some(3), "{}", r.describe());
    assert_eq!(
        key,
        std::fs::read(fresh.privkey_path()).unwrap(),
        "and never remade"
    );
    assert!(
        !r.contains("other hosts will not be able"),
        "{}",
        r.describe()
    );

    // Bootstrap to self with masterfiles that do not validate: refused,
    // nothing written but the key.
    let mf = fresh.path().join("masterfiles");
    std::fs::create_dir_all(&mf).unwrap();
    std::fs::write(mf.join("promises.cf"), "bundle agent main {\n").unwrap();
    let r = rcf_agent(&fresh, &["-I", "bootstrap", "--no-failsafe", "127.0.0.1"]).unwrap();
    assert_eq!(r.code(), Some(1), "{}", r.describe());
    r.assert_contains("Assuming role as policy server");
    assert!(!fresh.path().join("state/am_policy_hub").exists());
    assert!(!fresh.path().join("policy_server.dat").exists());
    assert!(!mf.join("cf_promises_validated").exists());
    assert_eq!(key, std::fs::read(fresh.privkey_path()).unwrap());

    // A client bootstrapping to a hub on its own loopback stays a client,
    // without the loopback warning.
    let hmf = hub.path().join("masterfiles");
    copy_tree(Path::new(MPF), &hmf).unwrap();
    let mut rule = AccessRule::admit_loopback(hmf.to_string_lossy().into_owned());
    rule.shortcut = Some("masterfiles".into());
    let mut p = ServerPolicy::new(0);
    p.access.push(rule);
    let srv = AnyServer::start(ServerKind::Rcf, &hub, &p).unwrap();
    let r = rcf_agent(
        &cli,
        &["-I", "bootstrap", "--no-failsafe", &srv.host_port()],
    )
    .unwrap();
    assert!(r.success(), "{}", r.describe());
    r.assert_contains("Assuming role as regular client");
    assert!(
        !r.contains("other hosts will not be able"),
        "{}",
        r.describe()
    );
    assert!(!cli.path().join("state/am_policy_hub").exists());
    srv.stop();
    eprintln!(
        "[agent_mpf_update] bootstrap keys/roles: {:?} wall",
        t0.elapsed()
    );
}

/// `--protocol classic` for bootstrap and update against the real
/// cf-serverd (with `allowlegacyconnects`): the same MPF gate and result.
#[test]
fn classic_bootstrap_and_update_real_hub() {
    let (hub, cli) = agent_workdirs("mpfclassic").unwrap();
    let mf = hub.path().join("masterfiles");
    copy_tree(Path::new(MPF), &mf).unwrap();
    let st = stamp(&hub, &mf, ServerKind::Real);
    assert!(st.success(), "{}", st.describe());
    let mut rule = AccessRule::admit_loopback(mf.to_string_lossy().into_owned());
    rule.shortcut = Some("masterfiles".into());
    let mut p = ServerPolicy::new(0);
    p.access.push(rule);
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    let srv = AnyServer::start(ServerKind::Real, &hub, &p).unwrap();
    let hp = srv.host_port();
    let b = rcf_agent(
        &cli,
        &[
            "-v",
            "bootstrap",
            "--protocol",
            "classic",
            "--no-failsafe",
            &hp,
        ],
    )
    .unwrap();
    assert!(b.success(), "{}\n{}", b.describe(), srv.log());
    b.assert_contains("Classic key exchange with");
    trees_equal(&mf, &cli.inputs()).unwrap();
    // Unchanged stamp: nothing walked.
    let (u, n) = {
        let run = rcf_agent(&cli, &["--json", "update", "--protocol", "classic"]).unwrap();
        let n = run.output.matches("\"walked\":true").count();
        (run, n)
    };
    assert!(u.success(), "{}", u.describe());
    assert_eq!(n, 0, "{}", u.describe());
    let main = mf.join("services/main.cf");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("# classic edit\n");
    std::fs::write(&main, &text).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let st = stamp(&hub, &mf, ServerKind::Real);
    assert!(st.success(), "{}", st.describe());
    let u = rcf_agent(&cli, &["--json", "update", "--protocol", "classic"]).unwrap();
    assert!(u.success(), "{}", u.describe());
    assert!(u.output.contains("\"walked\":true"), "{}", u.describe());
    assert_eq!(
        std::fs::read_to_string(cli.inputs().join("services/main.cf")).unwrap(),
        text
    );
    srv.stop();
}
