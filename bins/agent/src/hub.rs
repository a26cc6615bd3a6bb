//! The policy hub role: what `cf-agent --bootstrap <own address>` and the
//! hub's own agent runs do, for a hub made of rcf only.
//!
//! * bootstrap to this host (its address is one of this host's and this
//!   work dir holds `masterfiles/promises.cf`): validate masterfiles, put
//!   them into `inputs/` atomically, tag masterfiles (`cf_promises_validated`,
//!   `cf_promises_release_id`), write `state/am_policy_hub` and
//!   `policy_server.dat`, enable rcf-serverd through systemd when systemd runs;
//! * `update` on a hub: validate masterfiles, rewrite the stamp only when
//!   something in masterfiles is newer than it (so clients walk only when
//!   the policy changed), and refresh `inputs/` from masterfiles locally, as
//!   the MPF's `am_policy_hub` branch does.
//!
//! A policy that does not validate is never stamped and never installed.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rcf_core::client::listing;
use rcf_core::client::mpf_update::{self, RELEASE_ID, VALIDATED_STAMP};
use rcf_core::client::select::{DirFilter, FileSelect, NamePatterns};
use rcf_core::client::Level;

use crate::output::Output;

/// `state/am_policy_hub`, 3.21's marker (an empty file, mode 0600).
pub fn marker(workdir: &Path) -> PathBuf {
    workdir.join("state").join("am_policy_hub")
}

/// Whether this host is a policy hub (the marker exists).
pub fn am_policy_hub(workdir: &Path) -> bool {
    marker(workdir).exists()
}

/// This host's addresses: loopback, the IPv4 addresses of `/proc/net/fib_trie`
/// ("/32 host LOCAL") and the IPv6 ones of `/proc/net/if_inet6`.
pub fn local_addresses() -> Vec<String> {
    let mut out = vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
    ];
    if let Ok(text) = fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<&str> = None;
        for line in text.lines() {
            let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
            if t.contains("/32 host LOCAL") {
                if let Some(ip) = last {
                    out.push(ip.to_string());
                }
            } else if t.parse::<std::net::Ipv4Addr>().is_ok() {
                last = Some(t);
            }
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/net/if_inet6") {
        for line in text.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            let Ok(n) = u128::from_str_radix(hex, 16) else {
                continue;
            };
            out.push(std::net::Ipv6Addr::from(n).to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a bootstrap to `host` makes this host the hub: the address is
/// one of this host's and the work dir has `masterfiles/promises.cf`.
/// (3.21 decides on the address alone and then refuses a host without
/// masterfiles; requiring masterfiles keeps a client that bootstraps to a
/// hub on its own loopback, as in a lab, a client.)
pub fn is_self(host: &str, workdir: &Path) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let local = h.starts_with("127.") || local_addresses().iter().any(|a| a == h);
    local && workdir.join("masterfiles").join("promises.cf").is_file()
}

/// Validate masterfiles, then write `cf_promises_release_id` when missing
/// and `cf_promises_validated` when missing or older than a file of
/// masterfiles, in 3.21's format. `Ok(true)`: the stamp was (re)written.
pub fn tag_masterfiles(workdir: &Path, now: i64, out: &Output) -> Result<bool, String> {
    let mf = workdir.join("masterfiles");
    let by = crate::mpf::validate(workdir, &mf.join("promises.cf"))?;
    out.log(Level::Verbose, &format!("Masterfiles validated by '{by}'"));
    let rid = mf.join(RELEASE_ID);
    if !rid.exists() {
        let mut top = Vec::new();
        for e in fs::read_dir(&mf).map_err(|e| format!("Can't list '{}': {e}", mf.display()))? {
            let Ok(e) = e else { continue };
            if let Ok(m) = e.metadata() {
                if m.is_file() {
                    top.push((e.file_name().to_string_lossy().into_owned(), m.len()));
                }
            }
        }
        let id = mpf_update::release_id(top.iter().map(|(n, s)| (n.as_str(), *s)));
        write_file(&rid, mpf_update::release_id_file(&id).as_bytes())?;
        out.log(
            Level::Verbose,
            &format!("Saved policy release ID file '{}'", rid.display()),
        );
    }
    let stamp = mf.join(VALIDATED_STAMP);
    let stamp_mtime = fs::metadata(&stamp).ok().map(|m| mtime_ns(&m));
    let newest = newest_mtime(&mf, &[VALIDATED_STAMP]);
    if !mpf_update::stamp_needed(stamp_mtime, newest) {
        return Ok(false);
    }
    write_file(&stamp, mpf_update::validated_stamp(now).as_bytes())?;
    // The rename that put it in place changed masterfiles' own mtime after
    // the stamp's: touch the stamp so the next run does not see masterfiles
    // as newer than its stamp.
    let _ = fs::File::options()
        .write(true)
        .open(&stamp)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    out.log(
        Level::Verbose,
        &format!("Saved policy validated marker file '{}'", stamp.display()),
    );
    Ok(true)
}

fn write_file(p: &Path, data: &[u8]) -> Result<(), String> {
    rcf_fs::ppkeys::write_replace_atomic(p, data, 0o600)
        .map_err(|e| format!("Can't write '{}': {e}", p.display()))
}

/// The newest mtime of anything under `dir` (directories included, so a
/// deletion counts), ignoring the top-level names in `skip`.
fn newest_mtime(dir: &Path, skip: &[&str]) -> i128 {
    let mut newest = fs::symlink_metadata(dir).map(|m| mtime_ns(&m)).unwrap_or(0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if d == dir && skip.iter().any(|s| e.file_name() == *s) {
                continue;
            }
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            newest = newest.max(mtime_ns(&m));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    newest
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// What a local copy of masterfiles takes.
pub struct LocalCopy {
    pub select: Option<FileSelect>,
    pub dirs: DirFilter,
}

impl LocalCopy {
    /// The failsafe's copy on a hub (`failsafe_u_infinite_client_policy`,
    /// `failsafe_exclude_vcs_files`).
    pub fn failsafe() -> LocalCopy {
        LocalCopy {
            select: Some(FileSelect::leaf(
                NamePatterns::new(&[r"\.git.*", r"\.mailmap"]).expect("constant"),
                true,
            )),
            dirs: mpf_update::inputs_dirs(),
        }
    }
}

/// Make `dst` a copy of `src` as `copy_from` with `purge` and digest
/// compare would (unselected files and excluded directories neither copied
/// nor purged); each file goes through `<file>.cfnew` + rename, so a hard
/// link shared with the old inputs is replaced, never written into.
/// Returns the number of files written.
pub fn sync_local(src: &Path, dst: &Path, c: &LocalCopy) -> Result<usize, String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} '{}': {e}", p.display());
    if !dst.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dst)
            .map_err(|e| io("Can't create directory", dst, e))?;
    }
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(|e| io("Can't list", src, e))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| listing::classify(n.as_encoded_bytes()) == listing::NameVerdict::Use)
        .collect();
    names.sort();
    let listed: std::collections::HashSet<&[u8]> =
        names.iter().map(|n| n.as_encoded_bytes()).collect();
    for e in fs::read_dir(dst)
        .map_err(|e| io("Can't list", dst, e))?
        .flatten()
    {
        let n = e.file_name();
        if listed.contains(n.as_encoded_bytes()) {
            continue;
        }
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(|e| io("Can't purge", &p, e))?;
    }
    let mut written = 0;
    for n in names {
        let (s, d) = (src.join(&n), dst.join(&n));
        let Ok(m) = fs::metadata(&s) else { continue };
        if m.is_dir() {
            if c.dirs
                .enters(s.as_os_str().as_encoded_bytes(), n.as_encoded_bytes())
            {
                written += sync_local(&s, &d, c)?;
            }
            continue;
        }
        if !m.is_file()
            || c.select.as_ref().is_some_and(|sel| {
                !sel.selects(n.as_encoded_bytes(), s.as_os_str().as_encoded_bytes())
            })
        {
            continue;
        }
        let new = fs::read(&s).map_err(|e| io("Can't read", &s, e))?;
        if fs::symlink_metadata(&d).is_ok_and(|m| m.is_file())
            && fs::read(&d).is_ok_and(|old| old == new)
        {
            continue;
        }
        if fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&d).map_err(|e| io("Can't replace", &d, e))?;
        }
        let mut tmp = d.as_os_str().to_owned();
        tmp.push(".cfnew");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        fs::write(&tmp, &new).map_err(|e| io("Can't write", &tmp, e))?;
        let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode_bits(m.mode() & 0o7777));
        fs::rename(&tmp, &d).map_err(|e| io("Can't rename", &tmp, e))?;
        written += 1;
    }
    Ok(written)
}

trait FromModeBits {
    fn from_mode_bits(m: u32) -> fs::Permissions;
}

impl FromModeBits for fs::Permissions {
    fn from_mode_bits(m: u32) -> fs::Permissions {
        use std::os::unix::fs::PermissionsExt;
        fs::Permissions::from_mode(m)
    }
}

/// Install masterfiles into `inputs/` atomically (staging seeded with hard
/// links, local copy, validation, one rename). `modules` is copied again
/// unfiltered, as the MPF's second copy does. Returns the files written.
pub fn install_inputs(workdir: &Path, c: &LocalCopy) -> Result<usize, String> {
    let mf = workdir.join("masterfiles");
    let inputs = workdir.join("inputs");
    let staging = crate::bootstrap::staging_dir(workdir);
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging)
            .map_err(|e| format!("Can't remove stale '{}': {e}", staging.display()))?;
    }
    if inputs.is_dir() {
        crate::bootstrap::link_tree(&inputs, &staging)
            .map_err(|e| format!("Can't prepare '{}': {e}", staging.display()))?;
    }
    let r = (|| {
        let mut n = sync_local(&mf, &staging, c)?;
        if mf.join("modules").is_dir() {
            let unfiltered = LocalCopy {
                select: None,
                dirs: mpf_update::modules_dirs(),
            };
            n += sync_local(&mf.join("modules"), &staging.join("modules"), &unfiltered)?;
        }
        crate::mpf::validate(workdir, &staging.join("promises.cf"))?;
        crate::bootstrap::swap_in(&staging, &inputs, workdir)
            .map_err(|e| format!("Can't move the new policy into '{}': {e}", inputs.display()))?;
        Ok(n)
    })();
    if r.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    r
}

/// `state/am_policy_hub`, created (0600) unless present, as 3.21 does.
pub fn write_marker(workdir: &Path) -> Result<(), String> {
    let m = marker(workdir);
    if m.exists() {
        return Ok(());
    }
    if let Some(d) = m.parent() {
        fs::create_dir_all(d).map_err(|e| format!("Can't create '{}': {e}", d.display()))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode_0600()
        .open(&m)
        .map(|_| ())
        .map_err(|e| format!("Error writing marker file '{}': {e}", m.display()))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Enable and start rcf-serverd through its systemd unit when systemd
/// runs this host (`/run/systemd/system` exists); otherwise say how.
pub fn enable_serverd(out: &Output) {
    if !Path::new("/run/systemd/system").is_dir() {
        out.log(
            Level::Notice,
            "systemd is not running: start rcf-serverd yourself (rcf-serverd, or its unit rcf-serverd.service)",
        );
        return;
    }
    match std::process::Command::new("systemctl")
        .args(["enable", "--now", "rcf-serverd.service"])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => {
            out.log(Level::Info, "Enabled and started rcf-serverd.service")
        }
        Ok(o) => out.log(
            Level::Error,
            &format!(
                "systemctl enable --now rcf-serverd.service failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => out.log(Level::Error, &format!("Can't run systemctl: {e}")),
    }
}

/// Hand over to CFEngine as `cf-agent --bootstrap` does: run the built-in
/// `failsafe.cf` (cf-agent writes it into inputs when missing). Skipped
/// when cf-agent is not installed.
pub fn failsafe(workdir: &Path, out: &Output) -> Result<(), String> {
    let Some(agent) = crate::mpf::find_tool("cf-agent") else {
        out.log(
            Level::Verbose,
            "cf-agent is not installed: no failsafe.cf run",
        );
        return Ok(());
    };
    out.log(
        Level::Info,
        &format!("Running '{} -f failsafe.cf'", agent.display()),
    );
    let st = std::process::Command::new(&agent)
        .args(["-f", "failsafe.cf"])
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", workdir)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("Can't run '{}': {e}", agent.display()))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "'{} -f failsafe.cf' failed ({st})",
            agent.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sync_filters_purges_and_never_writes_into_links() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("mf"), t.path().join("in"));
        fs::create_dir_all(src.join(".git")).unwrap();
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join("promises.cf"), "a").unwrap();
        fs::write(src.join(".gitignore"), "x").unwrap();
        fs::write(src.join(".git/HEAD"), "x").unwrap();
        fs::write(src.join("lib/x.cf"), "x").unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(dst.join("stale.cf"), "old").unwrap();
        let shared = t.path().join("shared");
        fs::write(&shared, "a-old").unwrap();
        fs::hard_link(&shared, dst.join("promises.cf")).unwrap();
        let n = sync_local(&src, &dst, &LocalCopy::failsafe()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(fs::read_to_string(dst.join("promises.cf")).unwrap(), "a");
        assert_eq!(
            fs::read_to_string(&shared).unwrap(),
            "a-old",
            "link target untouched"
        );
        assert!(!dst.join("stale.cf").exists());
        assert!(!dst.join(".gitignore").exists());
        assert!(!dst.join(".git").exists());
        assert_eq!(sync_local(&src, &dst, &LocalCopy::failsafe()).unwrap(), 0);
    }

    #[test]
    fn self_needs_a_local_address_and_masterfiles() {
        let t = tempfile::tempdir().unwrap();
        assert!(!is_self("127.0.0.1", t.path()));
        fs::create_dir_all(t.path().join("masterfiles")).unwrap();
        fs::write(t.path().join("masterfiles/promises.cf"), "").unwrap();
        assert!(is_self("127.0.0.1", t.path()));
        assert!(is_self("::1", t.path()));
        assert!(!is_self("192.0.2.1", t.path()));
    }
}
