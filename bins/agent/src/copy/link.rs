//! Making the links [`rcf_core::client::links`] decides: cf-agent's
//! `LinkCopy` and `VerifyLink`/`VerifyHardLink` without
//! `move_obstructions` (a correct link is kept; a wrong link, or anything
//! else in the way, is a failure and stays as it is).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use rcf_core::client::links::{self, LinkPlan, LinkType};
use rcf_core::client::Level;

use super::{CopyOpts, Outcome};
use crate::output::Output;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `LinkCopy`: make at `dest` the link for the source at server path
/// `src`, whose own link target is `link_target` (`None`: a regular file
/// taken by `linkcopy_patterns`, linked to `src` itself).
pub(super) fn link_copy(
    out: &Output,
    src: &[u8],
    link_target: Option<&[u8]>,
    dest: &Path,
    opts: &CopyOpts,
) -> Outcome {
    let leaf = src.rsplit(|&c| c == b'/').next().unwrap_or(src);
    let copylink = opts.copylink.as_ref().is_some_and(|p| p.matches_item(leaf));
    let dest_b = dest.as_os_str().as_bytes();
    if let Some(t) = link_target {
        out.log(
            Level::Verbose,
            &format!("Checking link from '{}' to '{}'", dest.display(), text(t)),
        );
        if opts.link_type == LinkType::Relative && links::relative_is_undefined(t) {
            out.log(
                Level::Warning,
                &format!(
                    "link_type relative for '{}' -> '{}': cf-agent 3.21 reads outside its buffer for a target that starts with neither '/' nor '.'; making the link it was seen to make (as for '/{}')",
                    dest.display(),
                    text(t),
                    text(t)
                ),
            );
        }
    }
    let plan = match links::plan_link(opts.link_type, src, link_target, dest_b, copylink) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match plan {
        LinkPlan::Symlink(t) => verify_symlink(out, dest, &t),
        LinkPlan::Expanded(p) => match fs::canonicalize(OsStr::from_bytes(&p)) {
            Ok(e) => verify_symlink(out, dest, e.as_os_str().as_bytes()),
            Err(err) => Outcome::Failed(format!(
                "Failed to expand absolute link to '{}' ({err})",
                text(&p)
            )),
        },
        LinkPlan::Hard(p) => verify_hard_link(out, dest, &p),
    }
}

/// Make the parent directories of `dest` as cf-agent does (0700).
fn parent_dirs(dest: &Path) -> Result<(), String> {
    match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) if !parent.exists() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("Can't create directory '{}': {e}", parent.display())),
        _ => Ok(()),
    }
}

/// `VerifyLink`: `dest` must be a symbolic link whose text is `target`.
fn verify_symlink(out: &Output, dest: &Path, target: &[u8]) -> Outcome {
    if let Ok(existing) = fs::read_link(dest) {
        let existing = existing.as_os_str().as_bytes();
        if links::link_is_correct(existing, target) {
            out.log(
                Level::Verbose,
                &format!(
                    "Link '{}' points to '{}', promise kept",
                    dest.display(),
                    text(target)
                ),
            );
            return Outcome::Kept;
        }
        return Outcome::Failed(format!(
            "Link '{}' points to '{}' not '{}', but not moving obstructions",
            dest.display(),
            text(existing),
            text(target)
        ));
    }
    if let Err(e) = parent_dirs(dest) {
        return Outcome::Failed(e);
    }
    if fs::symlink_metadata(dest).is_ok() {
        return Outcome::Failed(format!(
            "Object '{}' is obstructing promise",
            dest.display()
        ));
    }
    match std::os::unix::fs::symlink(OsStr::from_bytes(target), dest) {
        Ok(()) => {
            out.log(
                Level::Info,
                &format!("Linked files '{}' -> '{}'", dest.display(), text(target)),
            );
            Outcome::Copied
        }
        Err(e) => Outcome::Failed(format!(
            "Couldn't link '{}' to '{}'. (symlink: {e})",
            text(target),
            dest.display()
        )),
    }
}

/// `VerifyHardLink`: `dest` must be the regular file at `path` on this host.
fn verify_hard_link(out: &Output, dest: &Path, path: &[u8]) -> Outcome {
    let to = Path::new(OsStr::from_bytes(path));
    let src = match fs::metadata(to) {
        Ok(m) if m.is_file() => m,
        _ => {
            return Outcome::Failed(format!(
                "Source file '{}' is not a regular file, not appropriate to hard-link",
                to.display()
            ))
        }
    };
    match fs::metadata(dest) {
        Ok(d) if d.ino() == src.ino() && d.dev() == src.dev() => {
            out.log(
                Level::Verbose,
                &format!(
                    "Hard link '{}' -> '{}' exists and is okay",
                    dest.display(),
                    to.display()
                ),
            );
            Outcome::Kept
        }
        Ok(d)
            if d.ino() != src.ino()
                && d.dev() != src.dev()
                && d.mode() == src.mode()
                && d.size() == src.size() =>
        {
            out.log(
                Level::Verbose,
                &format!(
                    "Hard link '{}' -> '{}' on different device appears okay",
                    dest.display(),
                    to.display()
                ),
            );
            Outcome::Kept
        }
        Ok(_) => Outcome::Failed(format!(
            "Object '{}' is obstructing promise",
            dest.display()
        )),
        Err(_) => {
            if let Err(e) = parent_dirs(dest) {
                return Outcome::Failed(e);
            }
            match fs::hard_link(to, dest) {
                Ok(()) => {
                    out.log(
                        Level::Info,
                        &format!(
                            "Hard linked file '{}' -> '{}'",
                            dest.display(),
                            to.display()
                        ),
                    );
                    Outcome::Copied
                }
                Err(e) => Outcome::Failed(format!(
                    "Couldn't hard link '{}' to '{}'. (link: {e})",
                    to.display(),
                    dest.display()
                )),
            }
        }
    }
}
