//! `rcf-agent copy`'s command line, wired to a [`Run`].

use std::path::Path;

use rcf_core::client::copy_plan::Backup;
use rcf_core::client::links::LinkType;
use rcf_core::client::select::{DirFilter, FileResult, FileSelect, NamePatterns};
use rcf_core::client::Level;
use rcf_smol::ClassicOptions;

use super::{Compare, CopyOpts, Run, RunError};
use crate::output::Output;
use crate::CopyArgs;

/// `rcf-agent copy`.
pub fn run(workdir: &Path, a: &CopyArgs, out: &Output) -> u8 {
    let classic = rcf_core::banner::ProtocolVersion::from_policy_name(&a.conn.protocol)
        == Some(rcf_core::banner::ProtocolVersion::Classic);
    let version = if classic {
        rcf_core::banner::ProtocolVersion::Classic
    } else {
        match crate::protocol(&a.conn, out) {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
    if a.encrypt && !classic {
        out.log(
            Level::Verbose,
            "encrypt is ignored over TLS (as cf-agent does)",
        );
    }
    let mut servers = Vec::new();
    for s in &a.servers {
        match crate::parse_host_port(s) {
            Ok(sa) => servers.push(sa),
            Err(e) => {
                out.log(Level::Error, &e);
                return 2;
            }
        }
    }
    let key = match crate::host_key(workdir, false, out) {
        Ok(k) => k,
        Err(e) => {
            out.log(Level::Error, &e);
            out.log(Level::Error, "No public/private key pair is loaded, please create one by running \"rcf-key\" or \"cf-key\"");
            return crate::EXIT_FAILED;
        }
    };
    // cf-agent's default_timeout (10 s) unless -t says otherwise.
    let mut conn = a.conn.clone();
    conn.timeout.get_or_insert(crate::AGENT_TIMEOUT);
    let base = match crate::connect_options(workdir, &key, &conn, version, a.trustkey, out) {
        Ok(b) => b,
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    let Some(compare) = Compare::parse(&a.compare) else {
        out.log(
            Level::Error,
            &format!("Unknown compare mode '{}'", a.compare),
        );
        return 2;
    };
    let (dirs, select) = match selection(a) {
        Ok(x) => x,
        Err(e) => {
            out.log(Level::Error, &e);
            return 2;
        }
    };
    let (linkcopy, copylink) = match (
        optional_patterns(&a.linkcopy_patterns),
        optional_patterns(&a.copylink_patterns),
    ) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => {
            out.log(Level::Error, &e);
            return 2;
        }
    };
    if a.include_basedir || a.rmdeadlinks {
        // DepthSearch applies them to the promiser's own tree only for
        // perms, changes, rename or delete promises (verify_files.c phase 1).
        out.log(
            Level::Verbose,
            "include_basedir and rmdeadlinks act on perms, changes, rename and delete, not on the copy itself (as cf-agent): dead links in the destination stay",
        );
    }
    let Some(backup) = Backup::parse(&a.copy_backup) else {
        out.log(
            Level::Error,
            &format!("Unknown copy_backup '{}'", a.copy_backup),
        );
        return 2;
    };
    let opts = CopyOpts {
        compare,
        verify: a.verify,
        recurse: a.recurse,
        depth: a.depth,
        purge: a.purge,
        preserve: a.preserve,
        missing_ok: a.missing_ok,
        type_check: a.type_check,
        force_update: a.force_update,
        stealth: a.stealth,
        collapse: a.collapse_destination_dir,
        exclude: Vec::new(),
        dirs,
        select,
        xdev: a.xdev,
        check_root: a.check_root,
        link_type: LinkType::parse(&a.link_type).unwrap_or_default(),
        linkcopy,
        copylink,
        backup,
        repository: a.default_repository.clone(),
    };
    smol::block_on(async {
        // A server lost mid-run: the copy starts over on the ones after it.
        let mut start = 0;
        let mut earlier = None;
        let (r, summary) = loop {
            let mut run = Run::new(servers[start..].to_vec(), base.clone(), out.clone());
            run.set_parallel(usize::from(a.par.parallel));
            if classic {
                run.use_classic(ClassicOptions {
                    key: std::sync::Arc::new(key.clone()),
                    encrypt: a.encrypt,
                    state_dir: workdir.join("state"),
                });
            }
            let r = run.copy(&a.source, &a.dest, &opts).await;
            let mut summary = run.finish().await;
            if let Some(e) = earlier.take() {
                crate::failover::carry_over(e, &mut summary);
            }
            match crate::failover::after_loss(&servers[start..], &r, out) {
                Some(i) => {
                    start += i;
                    earlier = Some(summary);
                }
                None => break (r, summary),
            }
        };
        let (code, err) = match &r {
            Ok(()) if summary.failed.is_empty() => (crate::EXIT_OK, None),
            Ok(()) => (crate::EXIT_FAILED, None),
            Err(e @ RunError::NoServer(_)) => (crate::EXIT_NO_SERVER, Some(e.to_string())),
            Err(e @ RunError::Lost { .. }) => (crate::EXIT_FAILED, Some(e.to_string())),
        };
        if let Some(e) = &err {
            out.log(Level::Error, e);
        }
        out.emit_json(&summary.to_json(code == 0, err.as_deref()));
        code
    })
}

/// `depth_search`'s directory filter and `file_select` from the flags.
/// `file_result` is required with `--path-name`, as cf-agent requires it
/// in every `file_select` body; with `--leaf-name` alone it defaults to
/// `leaf_name`.
fn selection(a: &CopyArgs) -> Result<(DirFilter, Option<FileSelect>), String> {
    let patterns = optional_patterns;
    let dirs = DirFilter {
        exclude: patterns(&a.exclude_dirs)?,
        include: patterns(&a.include_dirs)?,
    };
    let leaf_name = patterns(&a.leaf_name)?;
    let path_name = if a.path_name.is_empty() {
        None
    } else {
        Some(NamePatterns::absolute(&a.path_name).map_err(|e| e.to_string())?)
    };
    let result = match (&a.file_result, &leaf_name, &path_name) {
        (None, None, None) => return Ok((dirs, None)),
        (None, Some(_), None) => "leaf_name",
        (None, _, Some(_)) => return Err(
            "--path-name needs --file-result (cf-agent requires file_result in a file_select body)"
                .into(),
        ),
        (Some(r), _, _) => r.as_str(),
    };
    let result = FileResult::parse(result).map_err(|e| e.to_string())?;
    Ok((
        dirs,
        Some(FileSelect {
            leaf_name,
            path_name,
            result,
        }),
    ))
}

/// A pattern list flag: `None` when not given.
fn optional_patterns(v: &[String]) -> Result<Option<NamePatterns>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        NamePatterns::new(v).map(Some).map_err(|e| e.to_string())
    }
}
