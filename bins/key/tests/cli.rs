//! rcf-key on its own: files, modes, messages, exit codes.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn generates_pair_where_cf_key_does_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("work");
    let r = rcf_key(&wd, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.all(), "", "silent at the default log level, like cf-key");
    let pp = wd.join("ppkeys");
    assert_eq!(mode(&pp), 0o700);
    for f in ["localhost.priv", "localhost.pub"] {
        assert_eq!(mode(&pp.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&wd.join("randseed")), 0o600);
    assert_eq!(fs::read(wd.join("randseed")).unwrap().len(), 1024);
    let privk = fs::read_to_string(pp.join("localhost.priv")).unwrap();
    let pubk = fs::read_to_string(pp.join("localhost.pub")).unwrap();
    assert!(privk.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    assert!(pubk.starts_with("-----BEGIN RSA PUBLIC KEY-----\n"));
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(&pp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // -p with no file reads localhost.pub.
    let r = rcf_key(&wd, &["-p"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.starts_with("MD5=") && r.stdout.len() == 4 + 32 + 1,
        "{:?}",
        r.stdout
    );
}

#[test]
fn refuses_to_overwrite_an_existing_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path();
    assert_eq!(rcf_key(wd, &[]).code, 0);
    let before = snapshot(wd);
    let r = rcf_key(wd, &[]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!(
            "   error: A key file already exists at {}/ppkeys/localhost.pub\n",
            wd.display()
        )
    );
    assert_eq!(snapshot(wd), before);
    // Only the private half present: cf-key names that file.
    fs::remove_file(wd.join("ppkeys/localhost.pub")).unwrap();
    let r = rcf_key(wd, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("already exists at") && r.stdout.contains("localhost.priv"),
        "{}",
        r.all()
    );
}

#[test]
fn output_file_and_key_size() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("k");
    let r = rcf_key(
        &tmp.path().join("wd"),
        &["-f", base.to_str().unwrap(), "-T", "3072"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(mode(&tmp.path().join("k.priv")), 0o600);
    assert_eq!(mode(&tmp.path().join("k.pub")), 0o600);
    let pubk = fs::read(tmp.path().join("k.pub")).unwrap();
    let key = rcf_core::keys::parse_public_pem(&pubk).unwrap();
    assert_eq!(rcf_core::keys::modulus_bits(&key), 3072);
    // Nothing was written to WORKDIR/ppkeys.
    assert!(!tmp.path().join("wd/ppkeys/localhost.priv").exists());
}

#[test]
fn small_key_size_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("wd");
    let r = rcf_key(&wd, &["-T", "1024"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.all());
    assert!(r.stdout.contains("1024"), "{}", r.stdout);
    assert!(!wd.join("ppkeys/localhost.priv").exists());
    assert!(!wd.join("ppkeys/localhost.pub").exists());
}

#[test]
fn workdir_flag_beats_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let env_wd = tmp.path().join("env");
    let flag_wd = tmp.path().join("flag");
    let r = rcf_key(&env_wd, &["--workdir", flag_wd.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(flag_wd.join("ppkeys/localhost.pub").exists());
    assert!(!env_wd.exists());
    let help = rcf_key(&env_wd, &["--help"]);
    assert!(
        help.stdout.contains("CFENGINE_TEST_OVERRIDE_WORKDIR"),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("/var/lib/cfengine3") && help.stdout.contains(".cfagent"));
}

#[test]
fn non_private_ppkeys_dir_is_fatal_like_cf_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pp = tmp.path().join("ppkeys");
    fs::create_dir(&pp).unwrap();
    fs::set_permissions(&pp, fs::Permissions::from_mode(0o755)).unwrap();
    let r = rcf_key(tmp.path(), &[]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!(
            "   error: Fatal CFEngine error: UNTRUSTED: Private key directory {} (mode 755) was not private!\n",
            pp.display()
        )
    );
    assert!(fs::read_dir(&pp).unwrap().next().is_none());
}

#[test]
fn trust_list_remove_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = tmp.path().join("peer");
    assert_eq!(rcf_key(&peer, &[]).code, 0);
    let peer_pub = peer.join("ppkeys/localhost.pub");
    let id = rcf_key(&peer, &["-p"]).stdout.trim().to_string();
    let wd = tmp.path().join("me");
    assert_eq!(rcf_key(&wd, &[]).code, 0);

    let r = rcf_key(&wd, &["-t", peer_pub.to_str().unwrap()]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        "  notice: Establishing trust might be incomplete. For completeness, use --trust-key IPADDR:filename\n"
    );
    let root_file = wd.join(format!("ppkeys/root-{id}.pub"));
    assert_eq!(fs::read(&root_file).unwrap(), fs::read(&peer_pub).unwrap());
    assert_eq!(mode(&root_file), 0o600);

    let r = rcf_key(&wd, &["-t", &format!("bob@::1:{}", peer_pub.display())]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
    assert!(wd.join(format!("ppkeys/bob-{id}.pub")).exists());

    // An old-style file shows its address in --list-trusted.
    fs::copy(&peer_pub, wd.join("ppkeys/alice-192.0.2.7.pub")).unwrap();
    let r = rcf_key(&wd, &["--list-trusted", "-N"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        format!("User\tIP\tKey\nalice\t192.0.2.7\t{id}\nbob\t-\t{id}\nroot\t-\t{id}\nTotal Entries: 3\n")
    );
    let r = rcf_key(&wd, &["--list-trusted"]);
    assert!(
        r.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("alice                192.0.2.7 "),
        "{}",
        r.stdout
    );

    // Never overwrite: tamper with the trusted file, trust again, unchanged.
    fs::write(&root_file, b"tampered").unwrap();
    assert_eq!(rcf_key(&wd, &["-t", peer_pub.to_str().unwrap()]).code, 0);
    assert_eq!(fs::read(&root_file).unwrap(), b"tampered");
    let v = rcf_key(&wd, &["-v", "-t", peer_pub.to_str().unwrap()]);
    assert!(
        v.stdout.contains("already exists, not rewriting"),
        "{}",
        v.stdout
    );

    // Remove by address: the old-style file and every file of its key.
    let r = rcf_key(&wd, &["-r", "192.0.2.7"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!wd.join("ppkeys/alice-192.0.2.7.pub").exists());
    assert!(!wd.join(format!("ppkeys/bob-{id}.pub")).exists());
    // root's file was tampered with, but its name carries the id: removed too.
    assert!(!root_file.exists());
    assert!(wd.join("ppkeys/localhost.priv").exists() && wd.join("ppkeys/localhost.pub").exists());

    // Nothing left: cf-key's "not found" exit codes.
    assert_eq!(rcf_key(&wd, &["-r", &id]).code, 252);
    assert_eq!(rcf_key(&wd, &["-r", "192.0.2.7"]).code, 253);
    assert_eq!(rcf_key(&wd, &["-r", "MD5=xyz"]).code, 255);
}

#[test]
fn hostile_trust_user_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(rcf_key(tmp.path(), &[]).code, 0);
    let pubk = tmp.path().join("ppkeys/localhost.pub");
    let before = snapshot(tmp.path());
    let r = rcf_key(
        tmp.path(),
        &["-t", &format!("../../x@1.2.3.4:{}", pubk.display())],
    );
    assert_eq!(r.code, 1);
    assert_eq!(snapshot(tmp.path()), before);
}

/// Without --workdir or CFENGINE_TEST_OVERRIDE_WORKDIR: root uses
/// /var/lib/cfengine3, anyone else the passwd home + /.cfagent (as cf-key,
/// which ignores $HOME). Checked read-only with -p on a missing default key.
#[test]
fn default_workdir_for_a_non_root_user_is_passwd_home() {
    use std::process::Command;
    let is_root = fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        })
        .unwrap();
    let mut cmd = if is_root {
        // Run as nobody (home /nonexistent on Debian).
        let mut c = Command::new(require("runuser", "needs util-linux runuser"));
        c.args(["-u", "nobody", "--", RCF_KEY, "-p"]);
        c
    } else {
        let mut c = Command::new(RCF_KEY);
        c.arg("-p");
        c
    };
    let out = cmd
        .env_remove("CFENGINE_TEST_OVERRIDE_WORKDIR")
        .env("HOME", "/definitely/not/used")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected_home = if is_root {
        "/nonexistent".to_string()
    } else {
        let uid = fs::metadata("/proc/self")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid()
            })
            .unwrap();
        fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 7 && f[2] == uid.to_string())
            .map(|f| f[5].to_string())
            .expect("current user in /etc/passwd")
    };
    let want = format!("{expected_home}/.cfagent/ppkeys/localhost.pub");
    assert!(
        text.contains(&want),
        "expected the default key path {want}, got: {text}"
    );
}
