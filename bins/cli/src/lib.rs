//! What the three binaries share on the command line, written once:
//! WORKDIR resolution (rcf-agent, rcf-key), the `-I`/`-v`/`-d` verbosity
//! flags (all three) and man pages rendered from the clap definitions.
//!
//! This crate reads the environment and `/etc/passwd`, so it is not part of
//! the pure core.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcf_core::server::Level;

/// WORKDIR of a root process (Debian's `cfengine3` package).
pub const SYSTEM_WORKDIR: &str = "/var/lib/cfengine3";
/// The environment variable CFEngine's own tests use to move WORKDIR.
pub const WORKDIR_ENV: &str = "CFENGINE_TEST_OVERRIDE_WORKDIR";

/// Why WORKDIR could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkdirError {
    /// Not root, not in the password database, and `$HOME` unset or empty.
    #[error("no home directory for this user; use --workdir")]
    NoHome,
}

/// The log level the `-I`/`--inform`, `-v`/`--verbose` and `-d`/`--debug`
/// flags ask for, as the CFEngine tools read them: the most verbose flag
/// given wins, none gives `notice`.
pub fn verbosity(inform: bool, verbose: bool, debug: bool) -> Level {
    if debug {
        Level::Debug
    } else if verbose {
        Level::Verbose
    } else if inform {
        Level::Info
    } else {
        Level::Notice
    }
}

/// WORKDIR as cf-agent and cf-key 3.21 find it: `explicit` (`--workdir`),
/// else `$CFENGINE_TEST_OVERRIDE_WORKDIR` when set and non-empty, else
/// `/var/lib/cfengine3` for root, else `~/.cfagent` with the home directory
/// taken from the password database (`$HOME` only for users it lacks).
pub fn workdir(explicit: Option<&Path>) -> Result<PathBuf, WorkdirError> {
    let passwd = || std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    resolve_workdir(
        explicit,
        env(WORKDIR_ENV),
        rustix::process::geteuid().as_raw(),
        passwd,
        env("HOME"),
    )
}

/// [`workdir`] over given inputs (the passwd text is read only when needed).
pub fn resolve_workdir(
    explicit: Option<&Path>,
    override_env: Option<PathBuf>,
    euid: u32,
    passwd: impl FnOnce() -> String,
    home_env: Option<PathBuf>,
) -> Result<PathBuf, WorkdirError> {
    if let Some(w) = explicit {
        return Ok(w.to_path_buf());
    }
    if let Some(w) = override_env {
        return Ok(w);
    }
    if euid == 0 {
        return Ok(PathBuf::from(SYSTEM_WORKDIR));
    }
    passwd_field(&passwd(), euid, 5)
        .map(PathBuf::from)
        .or(home_env)
        .map(|h| h.join(".cfagent"))
        .ok_or(WorkdirError::NoHome)
}

/// Field `idx` (0 name, 5 home, …) of the passwd(5) line of `uid`, when
/// that line is well formed (7 fields) and the field is not empty.
pub fn passwd_field(passwd: &str, uid: u32, idx: usize) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid) && !f[idx].is_empty())
            .then(|| f[idx].to_string())
    })
}

/// The section-8 man page of `cmd` (roff), as `dist/man/` holds it.
pub fn man_page(cmd: clap::Command) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut page)
        .expect("rendering into memory cannot fail");
    page
}

/// Print [`man_page`] on stdout (the hidden `--man` flag of each binary).
pub fn print_man_page(cmd: clap::Command) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(&man_page(cmd)).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Test helper: fails unless `committed` (a page under `dist/man/`) is
/// exactly what `cmd` renders, naming the one command that regenerates it.
pub fn assert_man_page_current(cmd: clap::Command, committed: &str) {
    let name = cmd.get_name().to_string();
    let fresh = String::from_utf8(man_page(cmd)).expect("clap_mangen writes UTF-8");
    assert!(
        fresh == committed,
        "dist/man/{name}.8 differs from what {name}'s command-line definition renders; \
         regenerate the pages with: dist/gen-man.sh"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
                          nohome:x:1001:1001::::/bin/sh\n\
                          short:x:1002\n";

    #[test]
    fn verbosity_most_verbose_flag_wins() {
        assert_eq!(verbosity(false, false, false), Level::Notice);
        assert_eq!(verbosity(true, false, false), Level::Info);
        assert_eq!(verbosity(true, true, false), Level::Verbose);
        assert_eq!(verbosity(true, true, true), Level::Debug);
        assert_eq!(verbosity(false, false, true), Level::Debug);
    }

    #[test]
    fn workdir_order_of_precedence() {
        let p = || PASSWD.to_string();
        let home = Some(PathBuf::from("/env/home"));
        let ov = Some(PathBuf::from("/override"));
        assert_eq!(
            resolve_workdir(Some(Path::new("/cli")), ov.clone(), 1000, p, home.clone()),
            Ok(PathBuf::from("/cli"))
        );
        assert_eq!(
            resolve_workdir(None, ov, 1000, p, home.clone()),
            Ok(PathBuf::from("/override"))
        );
        assert_eq!(
            resolve_workdir(
                None,
                None,
                0,
                || panic!("root never reads passwd"),
                home.clone()
            ),
            Ok(PathBuf::from(SYSTEM_WORKDIR))
        );
        // The passwd home wins over $HOME, as in cf-key 3.21.
        assert_eq!(
            resolve_workdir(None, None, 1000, p, home.clone()),
            Ok(PathBuf::from("/home/alice/.cfagent"))
        );
        // $HOME only for users the database lacks or gives no home.
        for uid in [1001, 1002, 4242] {
            assert_eq!(
                resolve_workdir(None, None, uid, p, home.clone()),
                Ok(PathBuf::from("/env/home/.cfagent")),
                "uid {uid}"
            );
        }
        assert_eq!(
            resolve_workdir(None, None, 4242, p, None),
            Err(WorkdirError::NoHome)
        );
    }

    #[test]
    fn passwd_fields() {
        assert_eq!(passwd_field(PASSWD, 1000, 0).as_deref(), Some("alice"));
        assert_eq!(passwd_field(PASSWD, 0, 5).as_deref(), Some("/root"));
        assert_eq!(passwd_field(PASSWD, 1001, 5), None);
        assert_eq!(
            passwd_field(PASSWD, 1002, 0),
            None,
            "short lines are skipped"
        );
    }

    #[quickcheck_macros::quickcheck]
    fn passwd_field_never_panics(text: String, uid: u32, idx: u8) -> bool {
        let _ = passwd_field(&text, uid, usize::from(idx % 7));
        true
    }
}
