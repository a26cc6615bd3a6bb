//! The MPF's `modules_presence` (run by `update.cf` every time): the
//! package modules and user modules of `inputs/modules` installed into
//! `WORKDIR/modules`, where cf-agent looks for them. The rules are
//! [`rcf_core::client::mpf_update`]'s; this walks and writes.
//!
//! Differences from 3.21: a vendored template with mustache tags is not
//! rendered (none of MPF 3.21's has one; it is said loudly); the owner is
//! whoever runs rcf-agent (3.21's `u_mo` also makes it root); a symbolic
//! link or special file under `inputs/modules` is skipped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcf_core::client::copy_plan::BACKUP_SUFFIX;
use rcf_core::client::mpf_update::{self, EditOutcome, MODULES_MODE};
use rcf_core::client::Level;

use crate::output::Output;

/// Install `WORKDIR/inputs/modules` into `WORKDIR/modules` as the MPF
/// does; each failure is logged, none stops the others. Returns how many
/// files were written.
pub fn run(workdir: &Path, out: &Output) -> usize {
    let from = workdir.join("inputs").join("modules");
    if !from.is_dir() {
        return 0;
    }
    let to = workdir.join("modules");
    let mut n = render_vendored(&from, &to, out);
    n += copy_dir(&from, &to, "", out);
    n
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn set_mode(p: &Path, out: &Output) {
    if let Err(e) = fs::set_permissions(p, fs::Permissions::from_mode(MODULES_MODE)) {
        out.log(
            Level::Error,
            &format!("Can't set mode 0755 on '{}': {e}", p.display()),
        );
    }
}

/// `p` with `suffix` appended to its name.
fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Write `data` to `dest` through `<dest>.cfnew` and a rename, mode 0755.
fn write_file(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = suffixed(dest, ".cfnew");
    let _ = fs::remove_file(&tmp);
    fs::write(&tmp, data)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(MODULES_MODE))?;
    fs::rename(&tmp, dest)
}

/// The vendored package modules (`edit_template` of each
/// `packages/vendored/<m>.mustache` into `modules/packages/<m>`).
fn render_vendored(from: &Path, to: &Path, out: &Output) -> usize {
    let vendored = from.join("packages").join("vendored");
    let todo = mpf_update::vendored_to_render(&names(&vendored), &names(&from.join("packages")));
    let mut n = 0;
    for m in todo {
        let template = vendored.join(format!("{m}{}", mpf_update::TEMPLATE_SUFFIX));
        let text = match fs::read_to_string(&template) {
            Ok(t) => t,
            Err(e) => {
                out.log(
                    Level::Error,
                    &format!("Can't read template '{}': {e}", template.display()),
                );
                continue;
            }
        };
        let rendered = match mpf_update::render_vendored(&template.to_string_lossy(), &text) {
            Ok(r) => r.as_bytes(),
            Err(e) => {
                out.log(Level::Warning, &e.to_string());
                continue;
            }
        };
        let dest = to.join("packages").join(&m);
        if let Err(e) = fs::create_dir_all(to.join("packages")) {
            out.log(
                Level::Error,
                &format!("Can't create '{}': {e}", to.display()),
            );
            continue;
        }
        let existing = fs::read(&dest).ok();
        let backup = suffixed(&dest, mpf_update::EDIT_BACKUP_SUFFIX);
        let old: &[u8] = match mpf_update::edit_outcome(existing.as_deref(), rendered) {
            EditOutcome::Unchanged => {
                set_mode(&dest, out);
                continue;
            }
            EditOutcome::Create => b"",
            EditOutcome::Replace => existing.as_deref().unwrap_or_default(),
        };
        let r = write_file(&backup, old).and_then(|_| write_file(&dest, rendered));
        match r {
            Ok(()) => {
                out.log(
                    Level::Info,
                    &format!(
                        "Rendered '{}' from template '{}'",
                        dest.display(),
                        template.display()
                    ),
                );
                n += 1;
            }
            Err(e) => out.log(
                Level::Error,
                &format!("Can't write '{}': {e}", dest.display()),
            ),
        }
    }
    n
}

/// `copy_from => u_cp(inputs/modules)`, `depth_search => u_recurse("inf")`,
/// `file_select => not_vendored_modules`, `perms => u_mo("755", "root")`:
/// digest compare, `.cfsaved` backup of a replaced file, no purge.
/// `rel` is `from` relative to `inputs/modules` (empty at the top).
fn copy_dir(from: &Path, to: &Path, rel: &str, out: &Output) -> usize {
    if !to.is_dir() {
        if let Err(e) = fs::create_dir_all(to) {
            out.log(
                Level::Error,
                &format!("Can't make directory '{}': {e}", to.display()),
            );
            return 0;
        }
    }
    if !rel.is_empty() {
        set_mode(to, out);
    }
    let dirs = mpf_update::modules_dirs();
    let mut n = 0;
    for name in names(from) {
        let (s, d) = (from.join(&name), to.join(&name));
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(m) = fs::symlink_metadata(&s) else {
            continue;
        };
        if m.is_dir() {
            if dirs.enters(s.as_os_str().as_encoded_bytes(), name.as_bytes()) {
                n += copy_dir(&s, &d, &r, out);
            }
            continue;
        }
        if !m.is_file() {
            out.log(
                Level::Verbose,
                &format!("Skipping '{}': not a regular file", s.display()),
            );
            continue;
        }
        if !mpf_update::copies_module(&r) {
            continue;
        }
        n += copy_file(&s, &d, out);
    }
    n
}

fn copy_file(s: &Path, d: &Path, out: &Output) -> usize {
    let new = match fs::read(s) {
        Ok(b) => b,
        Err(e) => {
            out.log(Level::Error, &format!("Can't read '{}': {e}", s.display()));
            return 0;
        }
    };
    match fs::symlink_metadata(d) {
        Ok(m) if m.is_file() => {
            if fs::read(d).is_ok_and(|old| old == new) {
                set_mode(d, out);
                return 0;
            }
            let backup = suffixed(d, std::str::from_utf8(BACKUP_SUFFIX).unwrap_or(".cfsaved"));
            if let Err(e) = fs::rename(d, &backup) {
                out.log(
                    Level::Error,
                    &format!("Can't back up '{}': {e}", d.display()),
                );
                return 0;
            }
        }
        Ok(m) if m.is_dir() => {
            out.log(
                Level::Error,
                &format!(
                    "Promised file copy {} exists but type mismatch with source '{}'",
                    d.display(),
                    s.display()
                ),
            );
            return 0;
        }
        _ => {}
    }
    match write_file(d, &new) {
        Ok(()) => {
            out.log(
                Level::Info,
                &format!("Updated file '{}' from '{}'", d.display(), s.display()),
            );
            1
        }
        Err(e) => {
            out.log(Level::Error, &format!("Can't write '{}': {e}", d.display()));
            0
        }
    }
}
