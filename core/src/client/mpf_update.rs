//! What the masterfiles policy framework's `update.cf` does on a client
//! (`cfe_internal_update_policy_cpv` in `cfe_internal/update/update_policy.cf`,
//! settings from `controls/update_def.cf` and the augments file), as data
//! and decisions the agent follows:
//!
//! 1. copy `<master>/cf_promises_validated` to `inputs/` with
//!    `compare => "digest"`;
//! 2. only when that copy changed the stamp (class `validated_updates_ready`),
//!    or on a policy hub, or when the gate is disabled, copy `<master>` to
//!    `inputs/` (purge, `exclude_dirs` of `u_infinite_client_policy`,
//!    `file_select => u_input_files`) and `<master>/modules` to
//!    `inputs/modules` (purge, `u_recurse("inf")`, no name filter);
//! 3. every run (`modules_presence`): render the vendored package modules
//!    (`inputs/modules/packages/vendored/*.mustache`) into
//!    `WORKDIR/modules/packages/` unless `inputs/modules/packages/` has a
//!    module of that name, then copy `inputs/modules` into
//!    `WORKDIR/modules` (local, digest compare, `.cfsaved` backups, no
//!    purge, everything but `packages/vendored*`), all mode 0755.

use super::select::{DirFilter, FileSelect, NamePatterns, PatternError};

/// `update_def.input_name_patterns`' default (MPF 3.21).
pub const DEFAULT_INPUT_NAME_PATTERNS: &[&str] = &[
    r".*\.cf",
    r".*\.dat",
    r".*\.txt",
    r".*\.conf",
    r".*\.mustache",
    r".*\.sh",
    r".*\.pl",
    r".*\.py",
    r".*\.rb",
    r".*\.sed",
    r".*\.awk",
    "cf_promises_release_id",
    r".*\.json",
    r".*\.yaml",
    r".*\.csv",
    r".*\.ps1",
];

/// `exclude_dirs` of `u_infinite_client_policy` (the inputs copy).
pub const INPUTS_EXCLUDE_DIRS: &[&str] = &[r"\.svn", r"\.git", "git-core", r"\.no-distrib"];

/// `exclude_dirs` of `u_recurse` (the modules copy).
pub const MODULES_EXCLUDE_DIRS: &[&str] = &[r"\.svn", r"\.git", "git-core"];

/// `update_def.mpf_update_policy_master_location` on a client.
pub const DEFAULT_MASTER_LOCATION: &str = "masterfiles";

/// The validation stamp's name, in masterfiles and in inputs.
pub const VALIDATED_STAMP: &str = "cf_promises_validated";

/// The release id's name.
pub const RELEASE_ID: &str = "cf_promises_release_id";

/// The class that turns the gate off (`update_def.cf`).
pub const GATE_DISABLE_CLASS: &str = "cfengine_internal_disable_cf_promises_validated";

/// The settings `update_def` resolves, from the augments file's `vars` and `classes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    /// `input_name_patterns`.
    pub input_name_patterns: Vec<String>,
    /// `mpf_update_policy_master_location`: the path asked of the hub.
    pub master_location: String,
    /// `cfengine_internal_disable_cf_promises_validated` is defined.
    pub gate_disabled: bool,
}

impl UpdateSettings {
    /// Resolve `update_def` as the MPF does: `def.input_name_patterns` and
    /// `def.mpf_update_policy_master_location` from augments win over the
    /// defaults; an empty master location is refused as unset.
    pub fn resolve(
        input_name_patterns: Option<Vec<String>>,
        master_location: Option<String>,
        gate_disabled: bool,
    ) -> UpdateSettings {
        UpdateSettings {
            input_name_patterns: input_name_patterns.unwrap_or_else(|| {
                DEFAULT_INPUT_NAME_PATTERNS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            master_location: master_location
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| DEFAULT_MASTER_LOCATION.to_string()),
            gate_disabled,
        }
    }

    /// `$(master_location)/cf_promises_validated`.
    pub fn stamp_source(&self) -> String {
        join(&self.master_location, VALIDATED_STAMP)
    }

    /// `$(master_location)/modules`.
    pub fn modules_source(&self) -> String {
        join(&self.master_location, "modules")
    }

    /// `file_select => u_input_files`.
    pub fn inputs_select(&self) -> Result<FileSelect, PatternError> {
        Ok(FileSelect::leaf(
            NamePatterns::new(&self.input_name_patterns)?,
            false,
        ))
    }
}

/// `depth_search => u_infinite_client_policy`'s directory filter.
pub fn inputs_dirs() -> DirFilter {
    DirFilter {
        exclude: Some(NamePatterns::new(INPUTS_EXCLUDE_DIRS).expect("constant patterns")),
        include: None,
    }
}

/// `depth_search => u_recurse("inf")`'s directory filter.
pub fn modules_dirs() -> DirFilter {
    DirFilter {
        exclude: Some(NamePatterns::new(MODULES_EXCLUDE_DIRS).expect("constant patterns")),
        include: None,
    }
}

/// Whether masterfiles is walked this run (`am_policy_hub|validated_updates_ready`):
/// a hub always does it, a client only when the stamp copy repaired the
/// stamp or the gate is disabled.
pub fn walk_masterfiles(am_policy_hub: bool, gate_disabled: bool, stamp_repaired: bool) -> bool {
    am_policy_hub || gate_disabled || stamp_repaired
}

/// The suffixes 3.21 counts in a release id (`GeneratePolicyReleaseIDFromTree`).
pub const RELEASE_ID_SUFFIXES: &[&str] = &[
    ".cf",
    ".dat",
    ".txt",
    ".conf",
    ".mustache",
    ".json",
    ".yaml",
];

/// `cf_promises_release_id`'s id for a masterfiles that is not a git
/// checkout, exactly as 3.21 computes it. `top_level` lists the regular
/// files directly in masterfiles (name, size). 3.21's `HashDirectoryTree`
/// does not descend into subdirectories and feeds SHA-1 its zeroed state
/// buffer instead of the bytes it read, so the id is the SHA-1 of as many
/// zero bytes as those files hold in all (measured against
/// `cf-promises -T`; see the tests).
pub fn release_id<'a>(top_level: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    use sha1::{Digest, Sha1};
    let total: u64 = top_level
        .into_iter()
        .filter(|(name, _)| RELEASE_ID_SUFFIXES.iter().any(|s| name.ends_with(s)))
        .map(|(_, size)| size)
        .sum();
    let mut h = Sha1::new();
    let zeros = [0u8; 4096];
    let mut left = total;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..n]);
        left -= n as u64;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `cf_promises_validated` as 3.21 writes it (`JsonWrite` of
/// `{"timestamp": <time>}`, no trailing newline).
pub fn validated_stamp(timestamp: i64) -> String {
    format!("{{\n  \"timestamp\": {timestamp}\n}}")
}

/// `cf_promises_release_id` as 3.21 writes it.
pub fn release_id_file(id: &str) -> String {
    format!("{{\n  \"releaseId\": \"{id}\"\n}}")
}

/// Whether the hub must (re)write its stamp: none yet, or some file of
/// masterfiles changed after it (3.21's `IsPolicyPrecheckNeeded`: the newest
/// mtime in the policy tree against the stamp's). Rewriting it otherwise
/// would make every client walk masterfiles on every run. Times are in
/// nanoseconds, so an edit in the same second as the stamp still counts.
pub fn stamp_needed(stamp_mtime: Option<i128>, newest_policy_mtime: i128) -> bool {
    stamp_mtime.is_none_or(|t| newest_policy_mtime > t)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `modules_presence`'s mode for everything it writes (`u_mo("755", "root")`).
pub const MODULES_MODE: u32 = 0o755;

/// The suffix of the template directory's files (`findfiles("…/vendored/*.mustache")`).
pub const TEMPLATE_SUFFIX: &str = ".mustache";

/// The backup an edit (`edit_template`) leaves of the file it changed
/// (`edit_backup`'s default): `<file>.cf-before-edit`.
pub const EDIT_BACKUP_SUFFIX: &str = ".cf-before-edit";

/// The vendored package modules `modules_presence` renders: the stem of
/// every `<name>.mustache` in `packages/vendored/`, except a name that
/// `packages/` itself holds (the user's override wins), sorted.
pub fn vendored_to_render(templates: &[String], package_entries: &[String]) -> Vec<String> {
    let mut out: Vec<String> = templates
        .iter()
        .filter_map(|t| t.strip_suffix(TEMPLATE_SUFFIX))
        .filter(|m| !m.is_empty() && !package_entries.iter().any(|p| p == m))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `file_select => not_vendored_modules`: whether the file at `rel`
/// (relative to `inputs/modules`) is copied to `WORKDIR/modules`. The MPF
/// matches `$(sys.inputdir)/modules/(?!packages/vendored).*` against the
/// whole path, so anything whose relative path starts with
/// `packages/vendored` (the templates) is left out.
pub fn copies_module(rel: &str) -> bool {
    !rel.starts_with("packages/vendored")
}

/// Why a vendored template is not rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template has mustache tags; rcf renders only tag-free
    /// templates (all of MPF 3.21's are).
    #[error("template '{0}' has mustache tags, which rcf-agent does not render; the module is not written")]
    HasTags(String),
}

/// A vendored template rendered with no data: the text itself when it
/// holds no `{{` (a tag-free mustache template renders to itself).
pub fn render_vendored<'a>(name: &str, template: &'a str) -> Result<&'a str, TemplateError> {
    if template.contains("{{") {
        Err(TemplateError::HasTags(name.to_string()))
    } else {
        Ok(template)
    }
}

/// What an `edit_template` with `create => "true"` does to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// Missing: created empty, then edited (the backup holds nothing).
    Create,
    /// Already the rendered text: untouched, no backup.
    Unchanged,
    /// Other text: the old one goes to the backup, the new one in place.
    Replace,
}

/// The edit a rendered module needs, given the file as it is (`None`: missing).
pub fn edit_outcome(existing: Option<&[u8]>, rendered: &[u8]) -> EditOutcome {
    match existing {
        None => EditOutcome::Create,
        Some(e) if e == rendered => EditOutcome::Unchanged,
        Some(_) => EditOutcome::Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let d = UpdateSettings::resolve(None, None, false);
        assert_eq!(d.input_name_patterns.len(), 16);
        assert_eq!(d.stamp_source(), "masterfiles/cf_promises_validated");
        assert_eq!(d.modules_source(), "masterfiles/modules");
        let sel = d.inputs_select().expect("defaults compile");
        for f in [
            "promises.cf",
            "def.json",
            "cf_promises_release_id",
            "x.mustache",
            "run.sh",
        ] {
            assert!(sel.selects(f.as_bytes(), f.as_bytes()), "{f}");
        }
        for f in ["cf_promises_validated", "README.md", "module", "a.cf~"] {
            assert!(!sel.selects(f.as_bytes(), f.as_bytes()), "{f}");
        }
        let o =
            UpdateSettings::resolve(Some(vec![r".*\.cf".into()]), Some("/srv/mf/".into()), true);
        assert_eq!(o.stamp_source(), "/srv/mf/cf_promises_validated");
        assert!(o.gate_disabled);
        assert!(!o
            .inputs_select()
            .expect("valid")
            .selects(b"def.json", b"def.json"));
        assert_eq!(
            UpdateSettings::resolve(None, Some(String::new()), false).master_location,
            "masterfiles"
        );
    }

    #[test]
    fn release_ids_as_cf_promises_writes_them() {
        // `cf-promises -T` on a dir holding promises.cf (22 bytes),
        // y.json (3) and sub/x.txt (1500): 3b575420… = SHA-1 of 25 zeros.
        assert_eq!(
            release_id([
                ("promises.cf", 22),
                ("y.json", 3),
                ("cf_promises_validated", 30)
            ]),
            "3b575420ceea4203152041be00dc80519d1532b5"
        );
        // The stock MPF 3.21: its top-level policy files hold 61627 bytes.
        assert_eq!(
            release_id([("x.cf", 61627)]),
            "f69aa4604ba727b13d44abe28f22e27f024c5388"
        );
        assert_eq!(release_id([("README.md", 10)]), release_id([]));
        assert_eq!(release_id_file("ab"), "{\n  \"releaseId\": \"ab\"\n}");
        assert_eq!(
            validated_stamp(1796616365),
            "{\n  \"timestamp\": 1796616365\n}"
        );
    }

    #[test]
    fn stamp_rewrites() {
        assert!(stamp_needed(None, 0));
        assert!(stamp_needed(Some(10), 11));
        assert!(!stamp_needed(Some(10), 10));
        assert!(!stamp_needed(Some(10), 3));
    }

    #[test]
    fn the_gate() {
        assert!(!walk_masterfiles(false, false, false));
        assert!(walk_masterfiles(false, false, true));
        assert!(walk_masterfiles(false, true, false));
        assert!(walk_masterfiles(true, false, false));
    }

    #[test]
    fn directory_filters() {
        assert!(!inputs_dirs().enters(b"masterfiles/x/.no-distrib", b".no-distrib"));
        assert!(modules_dirs().enters(b"masterfiles/modules/.no-distrib", b".no-distrib"));
        assert!(!modules_dirs().enters(b"masterfiles/modules/.git", b".git"));
    }

    #[test]
    fn modules_presence_rules() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            vendored_to_render(
                &t(&["yum.mustache", "apt_get.mustache", "README", ".mustache"]),
                &t(&["vendored", "apt_get"])
            ),
            vec!["yum".to_string()],
            "an override in packages/ wins; only *.mustache"
        );
        assert!(copies_module("rcf_test_module"));
        assert!(copies_module("packages/apt_get"));
        assert!(copies_module("sub/packages/vendored/x"));
        assert!(!copies_module("packages/vendored/yum.mustache"));
        assert!(
            !copies_module("packages/vendoredX/y"),
            "a prefix, as the lookahead"
        );
        assert_eq!(
            render_vendored("a", "#!/bin/sh\necho {x}\n"),
            Ok("#!/bin/sh\necho {x}\n")
        );
        assert!(render_vendored("a", "{{vars.sys.bindir}}").is_err());
        assert_eq!(edit_outcome(None, b"x"), EditOutcome::Create);
        assert_eq!(edit_outcome(Some(b"x"), b"x"), EditOutcome::Unchanged);
        assert_eq!(edit_outcome(Some(b""), b"x"), EditOutcome::Replace);
    }
}
