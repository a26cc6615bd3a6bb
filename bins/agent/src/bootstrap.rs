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

use rcf_core::client::mpf_update::{self, UpdateSettings, VALIDATED_STAMP};
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
    /// The hub serving the pull went away mid-run (connection lost and not
    /// re-established, or timed out): the next hub of the list starts over.
    Lost {
        server: String,
        msg: String,
    },
}

/// What a pull copies.
enum Mode {
    /// The whole `masterfiles` shortcut, unfiltered (bootstrap, `update --mirror`).
    Mirror,
    /// As the MPF's `update.cf` (`cfe_internal_update_policy_cpv`): the
    /// `cf_promises_validated` gate, then the filtered inputs copy and the
    /// unfiltered modules copy, then validation.
    Mpf(UpdateSettings),
}

/// A pull that succeeded.
struct Pulled {
    summary: crate::copy::Summary,
    /// Whether masterfiles was walked (and a new policy swapped in).
    walked: bool,
    /// The checker that validated the new policy (MPF mode).
    validated_by: Option<String>,
}

fn digest_file_opts() -> CopyOpts {
    CopyOpts {
        compare: Compare::Digest,
        // The MPF's copies purge, which removes cf-agent's backups again.
        backup: rcf_core::client::copy_plan::Backup::No,
        ..CopyOpts::default()
    }
}

/// The MPF's copies after the gate: masterfiles into the staging inputs
/// (`u_rcp` with purge, `u_infinite_client_policy`, `u_input_files`), then
/// `modules` unfiltered (`u_recurse("inf")`).
async fn mpf_copies(run: &mut Run, s: &UpdateSettings, staging: &Path) -> Result<(), RunError> {
    let select = s.inputs_select().map_err(|e| RunError::Lost {
        server: String::new(),
        detail: format!("input_name_patterns: {e}"),
    })?;
    let inputs = CopyOpts {
        recurse: true,
        purge: true,
        dirs: mpf_update::inputs_dirs(),
        select: Some(select),
        ..digest_file_opts()
    };
    run.copy(&s.master_location, staging, &inputs).await?;
    let modules = CopyOpts {
        recurse: true,
        purge: true,
        // A masterfiles without modules/: cf-agent logs the failed promise
        // and keeps the inputs it copied; so does this.
        missing_ok: true,
        dirs: mpf_update::modules_dirs(),
        ..digest_file_opts()
    };
    run.copy(&s.modules_source(), &staging.join("modules"), &modules)
        .await
}

pub(crate) fn staging_dir(workdir: &Path) -> PathBuf {
    workdir.join("inputs.rcf-staging")
}

/// Mirror `src` into `dst` with hard links (directories recreated).
pub(crate) fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
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
pub(crate) fn swap_in(staging: &Path, inputs: &Path, workdir: &Path) -> std::io::Result<()> {
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

/// What a pull does, whichever hub it is from.
struct PullJob<'a> {
    workdir: &'a Path,
    /// Trust a hub key seen for the first time (bootstrap).
    trust_new: bool,
    /// Make the host key when there is none (bootstrap).
    generate_key: bool,
    conn: &'a ConnArgs,
    parallel: u16,
    mode: &'a Mode,
    out: &'a Output,
}

/// Pull from the first hub of `hubs` that connects and authenticates
/// (refused, timed-out and untrusted hubs are skipped at connect time); a
/// hub lost mid-run makes the whole pull start over, from a fresh staging
/// directory, on the hubs after it, so the one swap into `inputs/` always
/// comes from a single hub's complete answers.
fn pull(job: &PullJob, hubs: &[ServerAddr]) -> Result<Pulled, PullError> {
    let mut start = 0;
    loop {
        let r = pull_once(job, &hubs[start..]);
        let Err(PullError::Lost { server, msg }) = r else {
            return r;
        };
        match crate::failover::next_after(&hubs[start..], &server) {
            Some(i) => {
                job.out.log(Level::Error, &msg);
                job.out.log(
                    Level::Notice,
                    &format!(
                        "Policy server '{server}' was lost during the update; starting over from '{}'",
                        hubs[start + i].text
                    ),
                );
                start += i;
            }
            // The last hub: the run failed, as with a single hub.
            None => return Err(PullError::Failed(msg)),
        }
    }
}

/// One pull from `hubs` (connect-time failover only).
fn pull_once(job: &PullJob, hubs: &[ServerAddr]) -> Result<Pulled, PullError> {
    let PullJob {
        workdir,
        trust_new,
        generate_key,
        conn,
        parallel,
        mode,
        out,
    } = *job;
    let version =
        crate::protocol(conn, out).map_err(|_| PullError::Failed("unsupported protocol".into()))?;
    let classic = version == rcf_core::banner::ProtocolVersion::Classic;
    let key = crate::host_key(workdir, generate_key, out).map_err(|e| {
        PullError::Failed(format!("{e}; No public/private key pair is loaded, please create one by running \"rcf-key\" or \"cf-key\""))
    })?;
    let mut conn = conn.clone();
    conn.timeout.get_or_insert(crate::AGENT_TIMEOUT);
    let base = crate::connect_options(workdir, &key, &conn, version, trust_new, out)
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
    let mirror = CopyOpts {
        recurse: true,
        purge: true,
        exclude: EXCLUDED.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..digest_file_opts()
    };
    let source = match mode {
        Mode::Mirror => MASTERFILES.to_string(),
        Mode::Mpf(s) => s.master_location.clone(),
    };
    let (r, summary, walked, stamp_failed) = smol::block_on(async {
        let mut run = Run::new(hubs.to_vec(), base, out.clone());
        run.set_parallel(usize::from(parallel));
        if classic {
            run.use_classic(rcf_smol::ClassicOptions {
                key: std::sync::Arc::new(key.clone()),
                encrypt: false,
                state_dir: workdir.join("state"),
            });
        }
        let (r, walked, stamp_failed) = match mode {
            Mode::Mirror => (run.copy(MASTERFILES, &staging, &mirror).await, true, None),
            Mode::Mpf(s) => {
                // The gate: the stamp by digest; a changed stamp is a repair.
                let copied = run.summary.copied.len();
                let failed = run.summary.failed.len();
                let r = run
                    .copy(
                        &s.stamp_source(),
                        &staging.join(VALIDATED_STAMP),
                        &digest_file_opts(),
                    )
                    .await;
                let repaired = run.summary.copied.len() > copied;
                // A stamp the hub does not have fails that promise only.
                let stamp_failed = run.summary.failed.drain(failed..).next().map(|(_, m)| m);
                match r {
                    Err(e) => (Err(e), false, stamp_failed),
                    Ok(()) if !mpf_update::walk_masterfiles(false, s.gate_disabled, repaired) => {
                        (Ok(()), false, stamp_failed)
                    }
                    Ok(()) => {
                        if s.gate_disabled {
                            out.log(
                                Level::Verbose,
                                "cf_promises_validated gate disabled: walking masterfiles",
                            );
                        }
                        (mpf_copies(&mut run, s, &staging).await, true, stamp_failed)
                    }
                }
            }
        };
        (r, run.finish().await, walked, stamp_failed)
    });
    let fail = |e: PullError| {
        let _ = fs::remove_dir_all(&staging);
        Err(e)
    };
    if let Some(m) = &stamp_failed {
        if walked {
            out.log(Level::Warning, m);
        } else if r.is_ok() {
            return fail(PullError::Failed(format!(
                "{m}; the policy server has no validated policy stamp, so no new policy is taken (as the MPF's update.cf)"
            )));
        }
    }
    match r {
        Err(RunError::NoServer(_)) => return fail(PullError::NoServer(format!("No suitable server found for '{source}'"))),
        Err(e) => {
            return fail(match &e {
                RunError::Lost { server, .. } => PullError::Lost {
                    server: server.clone(),
                    msg: e.to_string(),
                },
                RunError::NoServer(_) => PullError::Failed(e.to_string()),
            })
        }
        Ok(()) if !summary.failed.is_empty() => {
            return fail(PullError::Failed(format!(
                "Failed to copy policy from policy server at {}:{source} ({} file(s) failed, first: {})",
                summary.server.as_deref().unwrap_or(&hubs[0].text),
                summary.failed.len(),
                summary.failed[0].1
            )))
        }
        Ok(()) => {}
    }
    if !walked {
        let _ = fs::remove_dir_all(&staging);
        out.log(
            Level::Verbose,
            "cf_promises_validated is unchanged on the policy server: inputs are up to date",
        );
        return Ok(Pulled {
            summary,
            walked,
            validated_by: None,
        });
    }
    if !staging.join("promises.cf").is_file() {
        return fail(PullError::Failed(format!(
            "Bootstrapping failed, no input file at '{}' after bootstrap",
            inputs.join("promises.cf").display()
        )));
    }
    let mut validated_by = None;
    if matches!(mode, Mode::Mpf(_)) {
        match crate::mpf::validate(workdir, &staging.join("promises.cf")) {
            Ok(by) => {
                out.log(Level::Verbose, &format!("New policy validated by '{by}'"));
                validated_by = Some(by);
            }
            Err(why) => {
                return fail(PullError::Failed(format!(
                    "{why}; the new policy is not put in place"
                )))
            }
        }
    }
    if let Err(e) = swap_in(&staging, &inputs, workdir) {
        return fail(PullError::Failed(format!(
            "Can't move the new policy into '{}': {e}",
            inputs.display()
        )));
    }
    Ok(Pulled {
        summary,
        walked,
        validated_by,
    })
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `bootstrap_id.dat` (a warning only when it cannot be written).
fn write_bootstrap_id(workdir: &Path, out: &Output) {
    let id = workdir.join("bootstrap_id.dat");
    if let Err(e) =
        rcf_fs::ppkeys::write_replace_atomic(&id, format!("{}\n", bootstrap_id()).as_bytes(), 0o600)
    {
        out.log(
            Level::Warning,
            &format!("Can't write '{}': {e}", id.display()),
        );
    }
}

/// Bootstrap to this host: it becomes the hub (see [`crate::hub`]).
/// Nothing is changed unless masterfiles validates; the host key is made
/// first and kept whatever happens next.
/// Reports a bootstrap to `hub_arg` that failed before it changed
/// anything: `msg`, the line saying so, and the JSON result; returns the
/// exit code for it.
fn failed_unchanged(out: &Output, hub_arg: &str, msg: &str) -> u8 {
    out.log(Level::Error, msg);
    out.log(
        Level::Error,
        "Bootstrapping failed; policy_server.dat and inputs/ were left as they were",
    );
    json(out, false, hub_arg, None, Some(msg));
    crate::EXIT_FAILED
}

fn bootstrap_self(workdir: &Path, hub_arg: &str, host: &str, failsafe: bool, out: &Output) -> u8 {
    let mf = workdir.join("masterfiles");
    out.log(
        Level::Info,
        &format!(
            "Assuming role as policy server, with policy distribution point at: {}",
            mf.display()
        ),
    );
    if is_loopback(host) {
        out.log(Level::Warning, "Bootstrapping to loopback interface (localhost), other hosts will not be able to bootstrap to this server");
    }
    let fail = |msg: String| failed_unchanged(out, hub_arg, &msg);
    if let Err(e) = crate::host_key(workdir, true, out) {
        return fail(e);
    }
    if !mf.join("promises.cf").is_file() {
        return fail(format!(
            "In order to bootstrap as a policy server, the file '{}/promises.cf' must exist.",
            mf.display()
        ));
    }
    // Validate and tag masterfiles first (the stamp and release id then
    // reach inputs/ with the rest, as after cf-agent's bootstrap).
    if let Err(e) = crate::hub::tag_masterfiles(workdir, unix_now(), out) {
        return fail(e);
    }
    let written = match crate::hub::install_inputs(workdir, &crate::hub::LocalCopy::failsafe()) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::hub::write_marker(workdir) {
        return fail(e);
    }
    let dat = workdir.join("policy_server.dat");
    if let Err(e) =
        rcf_fs::ppkeys::write_replace_atomic(&dat, format!("{hub_arg}\n").as_bytes(), 0o644)
    {
        return fail(format!("Can't write '{}': {e}", dat.display()));
    }
    write_bootstrap_id(workdir, out);
    crate::hub::enable_serverd(out);
    out.log(
        Level::Notice,
        &format!("Bootstrap to '{hub_arg}' completed successfully! (this host is the policy hub; {written} file(s) put into inputs)"),
    );
    if failsafe {
        if let Err(e) = crate::hub::failsafe(workdir, out) {
            out.log(Level::Error, &e);
            json(out, false, hub_arg, None, Some(&e));
            return crate::EXIT_FAILED;
        }
    }
    out.emit_json(&format!(
        "{{\"hub\":{},\"result\":{{\"ok\":true,\"role\":\"policy_server\",\"written\":{written},\"error\":null}}}}",
        json_str(hub_arg)
    ));
    crate::EXIT_OK
}

/// `rcf-agent update` on a hub: validate and tag masterfiles, then put
/// them into inputs (the MPF's `am_policy_hub` branch, locally).
fn update_hub(workdir: &Path, out: &Output) -> u8 {
    let inputs = workdir.join("inputs");
    let kept = |msg: String| {
        out.log(Level::Error, &msg);
        out.log(
            Level::Notice,
            &format!("Policy update failed; cf_promises_validated not written, keeping the last good policy in '{}'", inputs.display()),
        );
        json(out, false, "localhost", None, Some(&msg));
        crate::EXIT_FAILED
    };
    let stamped = match crate::hub::tag_masterfiles(workdir, unix_now(), out) {
        Ok(s) => s,
        Err(e) => return kept(e),
    };
    let settings = match crate::mpf::settings(&workdir.join("masterfiles"), out) {
        Ok(s) => s,
        Err(e) => return kept(e),
    };
    let select = match settings.inputs_select() {
        Ok(s) => s,
        Err(e) => return kept(format!("input_name_patterns: {e}")),
    };
    let copy = crate::hub::LocalCopy {
        select: Some(select),
        dirs: mpf_update::inputs_dirs(),
    };
    match crate::hub::install_inputs(workdir, &copy) {
        Ok(n) => {
            out.log(
                Level::Notice,
                &format!(
                    "Updated local policy from masterfiles ({n} file(s); cf_promises_validated {})",
                    if stamped { "rewritten" } else { "unchanged" }
                ),
            );
            out.emit_json(&format!(
                "{{\"hub\":\"localhost\",\"result\":{{\"ok\":true,\"role\":\"policy_server\",\"written\":{n},\"stamped\":{stamped},\"error\":null}}}}"
            ));
            crate::EXIT_OK
        }
        Err(e) => kept(e),
    }
}

/// `rcf-agent bootstrap HUB[:PORT]…`: the hubs are tried in order (and a
/// hub lost mid-run hands over to the next); `policy_server.dat` gets them
/// all, one per line, the first being what cf-agent reads.
#[allow(clippy::too_many_arguments)]
pub fn bootstrap(
    workdir: &Path,
    hub_list: &[String],
    trust_server: bool,
    conn: &ConnArgs,
    parallel: u16,
    failsafe: bool,
    out: &Output,
) -> u8 {
    let entries = crate::failover::entries(hub_list);
    let hub_arg = entries.join(",");
    let hub_arg = hub_arg.as_str();
    let hubs = match crate::failover::parse(&entries) {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => {
            out.log(Level::Error, "no hub given");
            return 2;
        }
        Err(e) => {
            out.log(Level::Error, &e);
            return 2;
        }
    };
    if let Err(code) = crate::protocol(conn, out) {
        return code;
    }
    if hubs.len() == 1 && crate::hub::is_self(&hubs[0].host, workdir) {
        return bootstrap_self(workdir, hub_arg, &hubs[0].host, failsafe, out);
    }
    out.log(
        Level::Info,
        &format!(
            "Assuming role as regular client, bootstrapping to policy server: {}",
            hub_arg
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
    let job = PullJob {
        workdir,
        trust_new: trust_server,
        generate_key: true,
        conn,
        parallel,
        mode: &Mode::Mirror,
        out,
    };
    match pull(&job, &hubs) {
        Ok(Pulled { summary, .. }) => {
            let dat = workdir.join("policy_server.dat");
            let text = format!("{}\n", entries.join("\n"));
            if let Err(e) = rcf_fs::ppkeys::write_replace_atomic(&dat, text.as_bytes(), 0o644) {
                out.log(
                    Level::Error,
                    &format!("Can't write '{}': {e}", dat.display()),
                );
                return crate::EXIT_FAILED;
            }
            let _ = fs::remove_file(crate::hub::marker(workdir));
            write_bootstrap_id(workdir, out);
            out.log(
                Level::Notice,
                &format!("Bootstrap to '{hub_arg}' completed successfully!"),
            );
            if failsafe {
                if let Err(e) = crate::hub::failsafe(workdir, out) {
                    out.log(Level::Error, &e);
                    json(out, false, hub_arg, Some(&summary), Some(&e));
                    return crate::EXIT_FAILED;
                }
            }
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
        Err(PullError::Failed(msg) | PullError::Lost { msg, .. }) => {
            failed_unchanged(out, hub_arg, &msg)
        }
    }
}

/// `rcf-agent update`: the policy update (see `update_inputs`), then, in
/// MPF mode, `modules_presence` into `WORKDIR/modules`.
pub fn update(workdir: &Path, args: &crate::UpdateArgs, out: &Output) -> u8 {
    let code = update_inputs(workdir, args, out);
    if !args.mirror {
        // update.cf's modules_presence runs whatever the copies did.
        crate::modules_presence::run(workdir, out);
    }
    code
}

/// `rcf-agent update`: from the hubs given (`-H`), else those in
/// `policy_server.dat` (one per line), in order, with failover.
fn update_inputs(workdir: &Path, args: &crate::UpdateArgs, out: &Output) -> u8 {
    let (hub_list, conn, parallel, mirror) =
        (&args.hub[..], &args.conn, args.par.parallel, args.mirror);
    if crate::hub::am_policy_hub(workdir) && !mirror && hub_list.is_empty() {
        return update_hub(workdir, out);
    }
    let dat = workdir.join("policy_server.dat");
    let entries = if hub_list.is_empty() {
        match fs::read_to_string(&dat) {
            Ok(s) => crate::failover::entries(&[s]),
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
        }
    } else {
        crate::failover::entries(hub_list)
    };
    let hub_arg = entries.join(",");
    let hubs = match crate::failover::parse(&entries) {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => {
            out.log(
                Level::Error,
                &format!(
                    "No policy server is set in '{}'; bootstrap first",
                    dat.display()
                ),
            );
            return crate::EXIT_FAILED;
        }
        Err(e) if hub_list.is_empty() => {
            out.log(Level::Error, &format!("{e} in '{}'", dat.display()));
            return crate::EXIT_FAILED;
        }
        Err(e) => {
            out.log(Level::Error, &e);
            return 2;
        }
    };
    if let Err(code) = crate::protocol(conn, out) {
        return code;
    }
    let inputs = workdir.join("inputs");
    let mode = if mirror {
        Mode::Mirror
    } else {
        match crate::mpf::settings(&inputs, out) {
            Ok(s) => Mode::Mpf(s),
            Err(e) => {
                out.log(Level::Error, &e);
                out.log(
                    Level::Notice,
                    &format!(
                        "Policy update failed; keeping the last good policy in '{}'",
                        inputs.display()
                    ),
                );
                json(out, false, &hub_arg, None, Some(&e));
                return crate::EXIT_FAILED;
            }
        }
    };
    let job = PullJob {
        workdir,
        trust_new: false,
        generate_key: false,
        conn,
        parallel,
        mode: &mode,
        out,
    };
    match pull(&job, &hubs) {
        Ok(p) => {
            if p.walked {
                out.log(Level::Notice, "Updated local policy from policy server");
            } else {
                out.log(Level::Info, "Local policy is up to date (cf_promises_validated unchanged on the policy server)");
            }
            let doc = p.summary.to_json(true, None);
            let extra = format!(
                ",\"walked\":{},\"validated_by\":{}}}",
                p.walked,
                p.validated_by
                    .as_deref()
                    .map(json_str)
                    .unwrap_or_else(|| "null".into())
            );
            let doc = format!("{}{extra}", doc.strip_suffix('}').unwrap_or(&doc));
            out.emit_json(&format!(
                "{{\"hub\":{},\"result\":{doc}}}",
                json_str(&hub_arg)
            ));
            crate::EXIT_OK
        }
        Err(PullError::NoServer(msg)) => {
            out.log(Level::Error, &msg);
            out.log(Level::Notice, &format!("Policy server '{hub_arg}' is unreachable; keeping the last good policy in '{}'", inputs.display()));
            json(out, false, &hub_arg, None, Some(&msg));
            crate::EXIT_KEPT_LAST_GOOD
        }
        Err(PullError::Failed(msg) | PullError::Lost { msg, .. }) => {
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
