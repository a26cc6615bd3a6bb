//! `rcf-agent bootstrap` and `rcf-agent update`: pull the hub's
//! `masterfiles` shortcut into a staging directory, then swap it with
//! `inputs/` in one rename, so `inputs/` is always either the old policy or
//! the complete new one (SEMANTICS F.1-F.4).
//!
//! The staging directory starts as hard links of the current inputs:
//! every file the copy writes goes through `<file>.cfnew` + rename, which
//! replaces the link and never writes into the shared inode, so the old
//! `inputs/` is never modified, and unchanged files are not fetched again
//! (digest compare).

use std::fs;
use std::path::{Path, PathBuf};

use rcf_core::client::Level;

use crate::copy::{Compare, CopyOpts, Run, RunError};
use crate::output::{json_str, Output};
use crate::{ConnArgs, ServerAddr};

/// The shortcut the failsafe policy copies from.
const MASTERFILES: &str = "masterfiles";
/// Names the failsafe never copies.
const EXCLUDED: &[&str] = &[".svn", ".git", "git-core", ".no-distrib"];

enum PullError {
    NoServer(String),
    Failed(String),
}

fn staging_dir(workdir: &Path) -> PathBuf {
    workdir.join("inputs.rcf-staging")
}

/// Mirror `src` into `dst` with hard links (directories recreated).
fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(dst)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            link_tree(&s, &d)?;
        } else if t.is_file() {
            if fs::hard_link(&s, &d).is_err() {
                fs::copy(&s, &d)?;
            }
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        }
    }
    Ok(())
}

/// Put `staging` in place of `inputs` in one step; the old inputs end up
/// at `staging` and are removed.
fn swap_in(staging: &Path, inputs: &Path, workdir: &Path) -> std::io::Result<()> {
    if fs::symlink_metadata(inputs).is_ok() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            staging,
            rustix::fs::CWD,
            inputs,
            rustix::fs::RenameFlags::EXCHANGE,
        )?;
        let _ = fs::remove_dir_all(staging);
    } else {
        fs::rename(staging, inputs)?;
    }
    if let Ok(d) = fs::File::open(workdir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn pull(
    workdir: &Path,
    hub: &ServerAddr,
    trust_new: bool,
    generate_key: bool,
    conn: &ConnArgs,
    parallel: u16,
    out: &Output,
) -> Result<crate::copy::Summary, PullError> {
    let version =
        crate::protocol(conn, out).map_err(|_| PullError::Failed("unsupported protocol".into()))?;
    let key = crate::host_key(workdir, generate_key, out).map_err(|e| {
        PullError::Failed(format!("{e}; No public/private key pair is loaded, please create one by running \"rcf-key\" or \"cf-key\""))
    })?;
    let base = crate::connect_options(workdir, &key, conn, version, trust_new, out)
        .map_err(PullError::Failed)?;
    let inputs = workdir.join("inputs");
    let staging = staging_dir(workdir);
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(|e| {
            PullError::Failed(format!("Can't remove stale '{}': {e}", staging.display()))
        })?;
    }
    let seeded = if inputs.is_dir() {
        link_tree(&inputs, &staging)
    } else {
        Ok(())
    };
    if let Err(e) = seeded {
        let _ = fs::remove_dir_all(&staging);
        return Err(PullError::Failed(format!(
            "Can't prepare '{}': {e}",
            staging.display()
        )));
    }
    let opts = CopyOpts {
        compare: Compare::Digest,
        verify: false,
        recurse: true,
        depth: None,
        purge: true,
        preserve: false,
        missing_ok: false,
        type_check: false,
        exclude: EXCLUDED.iter().map(|s| s.as_bytes().to_vec()).collect(),
    };
    let (r, summary) = smol::block_on(async {
        let mut run = Run::new(vec![hub.clone()], base, out.clone());
        run.set_parallel(usize::from(parallel));
        let r = run.copy(MASTERFILES, &staging, &opts).await;
        (r, run.finish().await)
    });
    let fail = |e: PullError| {
        let _ = fs::remove_dir_all(&staging);
        Err(e)
    };
    match r {
        Err(RunError::NoServer(_)) => return fail(PullError::NoServer(format!("No suitable server found for '{MASTERFILES}'"))),
        Err(e) => return fail(PullError::Failed(e.to_string())),
        Ok(()) if !summary.failed.is_empty() => {
            return fail(PullError::Failed(format!(
                "Failed to copy policy from policy server at {}:{MASTERFILES} ({} file(s) failed, first: {})",
                hub.text,
                summary.failed.len(),
                summary.failed[0].1
            )))
        }
        Ok(()) => {}
    }
    if !staging.join("promises.cf").is_file() {
        return fail(PullError::Failed(format!(
            "Bootstrapping failed, no input file at '{}' after bootstrap",
            inputs.join("promises.cf").display()
        )));
    }
    if let Err(e) = swap_in(&staging, &inputs, workdir) {
        return fail(PullError::Failed(format!(
            "Can't move the new policy into '{}': {e}",
            inputs.display()
        )));
    }
    Ok(summary)
}

fn json(
    out: &Output,
    ok: bool,
    hub: &str,
    summary: Option<&crate::copy::Summary>,
    error: Option<&str>,
) {
    let s = summary.map(|s| s.to_json(ok, error)).unwrap_or_else(|| {
        format!(
            "{{\"ok\":{ok},\"error\":{}}}",
            error.map(json_str).unwrap_or_else(|| "null".into())
        )
    });
    out.emit_json(&format!("{{\"hub\":{},\"result\":{s}}}", json_str(hub)));
}

/// `sys.bootstrap_id`: 30 random bytes in base64 (40 characters).
fn bootstrap_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 30];
    rand_core::OsRng.fill_bytes(&mut b);
    base64(&b)
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// `rcf-agent bootstrap HUB[:PORT]`.
pub fn bootstrap(
    workdir: &Path,
    hub_arg: &str,
    trust_server: bool,
    conn: &ConnArgs,
    parallel: u16,
    out: &Output,
) -> u8 {
    let hub = match crate::parse_host_port(hub_arg) {
        Ok(h) => h,
        Err(e) => {
            out.log(Level::Error, &e);
            return 2;
        }
    };
    if let Err(code) = crate::protocol(conn, out) {
        return code;
    }
    if is_loopback(&hub.host) {
        out.log(Level::Warning, "Bootstrapping to loopback interface (localhost), other hosts will not be able to bootstrap to this server");
    }
    out.log(
        Level::Info,
        &format!(
            "Assuming role as regular client, bootstrapping to policy server: {}",
            hub.text
        ),
    );
    if trust_server {
        out.log(Level::Notice, "Bootstrap mode: implicitly trusting server, use --trust-server=no if server trust is already established");
    }
    if let Err(e) = fs::create_dir_all(workdir) {
        out.log(
            Level::Error,
            &format!("Can't create work directory '{}': {e}", workdir.display()),
        );
        return crate::EXIT_FAILED;
    }
    match pull(workdir, &hub, trust_server, true, conn, parallel, out) {
        Ok(summary) => {
            let dat = workdir.join("policy_server.dat");
            if let Err(e) =
                rcf_fs::ppkeys::write_replace_atomic(&dat, format!("{hub_arg}\n").as_bytes(), 0o644)
            {
                out.log(
                    Level::Error,
                    &format!("Can't write '{}': {e}", dat.display()),
                );
                return crate::EXIT_FAILED;
            }
            let _ = fs::remove_file(workdir.join("state").join("am_policy_hub"));
            let id = workdir.join("bootstrap_id.dat");
            if let Err(e) = rcf_fs::ppkeys::write_replace_atomic(
                &id,
                format!("{}\n", bootstrap_id()).as_bytes(),
                0o600,
            ) {
                out.log(
                    Level::Warning,
                    &format!("Can't write '{}': {e}", id.display()),
                );
            }
            out.log(
                Level::Notice,
                &format!("Bootstrap to '{hub_arg}' completed successfully!"),
            );
            json(out, true, hub_arg, Some(&summary), None);
            crate::EXIT_OK
        }
        Err(PullError::NoServer(msg)) => {
            out.log(Level::Error, &msg);
            let why = format!("Bootstrapping failed, could not connect to and authenticate '{hub_arg}'; nothing was changed");
            out.log(Level::Error, &why);
            json(out, false, hub_arg, None, Some(&msg));
            crate::EXIT_NO_SERVER
        }
        Err(PullError::Failed(msg)) => {
            out.log(Level::Error, &msg);
            out.log(
                Level::Error,
                "Bootstrapping failed; policy_server.dat and inputs/ were left as they were",
            );
            json(out, false, hub_arg, None, Some(&msg));
            crate::EXIT_FAILED
        }
    }
}

/// `rcf-agent update`.
pub fn update(workdir: &Path, conn: &ConnArgs, parallel: u16, out: &Output) -> u8 {
    let dat = workdir.join("policy_server.dat");
    let hub_arg = match fs::read_to_string(&dat) {
        Ok(s) => s.lines().next().unwrap_or("").trim().to_string(),
        Err(e) => {
            out.log(
                Level::Error,
                &format!(
                    "No policy server is set ('{}': {e}); bootstrap first",
                    dat.display()
                ),
            );
            return crate::EXIT_FAILED;
        }
    };
    let hub = match crate::parse_host_port(&hub_arg) {
        Ok(h) => h,
        Err(e) => {
            out.log(Level::Error, &format!("{e} in '{}'", dat.display()));
            return crate::EXIT_FAILED;
        }
    };
    if let Err(code) = crate::protocol(conn, out) {
        return code;
    }
    let inputs = workdir.join("inputs");
    match pull(workdir, &hub, false, false, conn, parallel, out) {
        Ok(summary) => {
            out.log(Level::Notice, "Updated local policy from policy server");
            json(out, true, &hub_arg, Some(&summary), None);
            crate::EXIT_OK
        }
        Err(PullError::NoServer(msg)) => {
            out.log(Level::Error, &msg);
            out.log(Level::Notice, &format!("Policy server '{hub_arg}' is unreachable; keeping the last good policy in '{}'", inputs.display()));
            json(out, false, &hub_arg, None, Some(&msg));
            crate::EXIT_KEPT_LAST_GOOD
        }
        Err(PullError::Failed(msg)) => {
            out.log(Level::Error, &msg);
            out.log(
                Level::Notice,
                &format!(
                    "Policy update failed; keeping the last good policy in '{}'",
                    inputs.display()
                ),
            );
            json(out, false, &hub_arg, None, Some(&msg));
            crate::EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_and_id_shape() {
        assert_eq!(super::base64(b"Man"), "TWFu");
        assert_eq!(super::base64(b"Ma"), "TWE=");
        assert_eq!(super::base64(b"M"), "TQ==");
        let id = super::bootstrap_id();
        assert_eq!(id.len(), 40);
        assert!(!id.contains('='));
    }
}
