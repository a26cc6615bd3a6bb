//! The pure decisions of a `copy_from` promise (cf-agent's
//! `files_copy.c`/`verify_files_utils.c`): whether an existing destination
//! is replaced (the `compare` modes), what a source entry is (file to copy,
//! directory to descend into, dangling link, special file), what a
//! directory's purge removes, which leftover temporaries are swept, whether a
//! finished transfer may be renamed into place, and how destinations and
//! remote paths are named.
//!
//! The agent asks the filesystem and the server, describes what it saw with
//! the plain values below, and follows the verdicts; nothing here touches a
//! file, so each rule is tested on its own.

use crate::reply::{FileType, StatReply};

/// `compare` of `body copy_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compare {
    /// Copy when the destination is older (mtime).
    Mtime,
    /// Copy when ctime or mtime is older (cf-agent's default).
    Ctime,
    /// The ctime rule, or a digest difference.
    Atime,
    /// Copy when sizes or the server's MD5 verdict differ (digest, hash, binary).
    Digest,
    /// Never overwrite an existing destination.
    Exists,
}

impl Compare {
    /// cf-agent's spellings; `None` for anything else, so a caller can refuse it.
    pub fn parse(s: &str) -> Option<Compare> {
        Some(match s {
            "mtime" => Compare::Mtime,
            "ctime" => Compare::Ctime,
            "atime" => Compare::Atime,
            "digest" | "hash" | "binary" => Compare::Digest,
            "exists" => Compare::Exists,
            _ => return None,
        })
    }

    /// Whether this mode may need the server's MD5 verdict, so a directory's
    /// verdicts are worth asking ahead of time in one pipelined batch.
    pub fn uses_digest(self) -> bool {
        matches!(self, Compare::Digest | Compare::Atime)
    }
}

/// What kind of thing sits at a destination path (`lstat`, links not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (dangling or not).
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// The destination as `lstat` saw it: what [`plan_file`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalFile {
    /// Its kind.
    pub kind: LocalKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Status change time, seconds.
    pub ctime: i64,
}

/// What to do with one regular source file and its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileVerdict {
    /// Transfer it (missing, older, different, or replaceable).
    Fetch,
    /// The destination is an up to date copy of the source.
    UpToDate,
    /// Sizes match: only the server's MD5 verdict can tell
    /// (see [`md5_reply_differs`]).
    AskDigest,
    /// Something of another type is in the way and may not be replaced
    /// (`Promised file copy ... exists but type mismatch with source`).
    TypeMismatch,
}

/// Whether the regular file `src` (as STATed) must be copied over `local`
/// under `compare`. A directory is never replaced by a file, and with
/// `type_check` nothing of another type is; without it a link or special
/// file is replaced by the rename, as cf-agent does.
#[must_use]
pub fn plan_file(
    local: Option<&LocalFile>,
    src: &StatReply,
    compare: Compare,
    type_check: bool,
) -> FileVerdict {
    let Some(m) = local else {
        return FileVerdict::Fetch;
    };
    match m.kind {
        LocalKind::File => {}
        LocalKind::Dir => return FileVerdict::TypeMismatch,
        LocalKind::Symlink | LocalKind::Other if type_check => return FileVerdict::TypeMismatch,
        LocalKind::Symlink | LocalKind::Other => return FileVerdict::Fetch,
    }
    let older = m.ctime < src.ctime || m.mtime < src.mtime;
    let by_digest = if m.size != src.size {
        FileVerdict::Fetch
    } else {
        FileVerdict::AskDigest
    };
    match compare {
        Compare::Exists => FileVerdict::UpToDate,
        Compare::Mtime if m.mtime < src.mtime => FileVerdict::Fetch,
        Compare::Ctime | Compare::Atime if older => FileVerdict::Fetch,
        Compare::Mtime | Compare::Ctime => FileVerdict::UpToDate,
        Compare::Atime | Compare::Digest => by_digest,
    }
}

/// `force_update`: a file that [`plan_file`] would keep (or ask about) is
/// fetched anyway; something of another type in the way stays a refusal.
pub fn forced(v: FileVerdict, force_update: bool) -> FileVerdict {
    match v {
        FileVerdict::UpToDate | FileVerdict::AskDigest if force_update => FileVerdict::Fetch,
        other => other,
    }
}

/// How an `MD5` exchange answers "do the files differ?": the server's
/// verdict when it gave one; a refusal counts as "same" (cf-agent reads
/// anything but `CFD_TRUE` so); a lost connection as "differs", so the file
/// is fetched again rather than silently kept.
pub fn md5_reply_differs<E>(reply: &Result<Result<bool, String>, E>) -> bool {
    match reply {
        Ok(Ok(differs)) => *differs,
        Ok(Err(_refused)) => false,
        Err(_) => true,
    }
}

/// What a source entry met during a copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceAction {
    /// A regular file: plan and maybe fetch it.
    CopyFile,
    /// A directory to copy recursively.
    Descend,
    /// A directory the copy does not enter (no recursion, or too deep).
    DirNotCopied,
    /// A symbolic link the server reports as such: it is dangling there
    /// (the server follows live links), so nothing is copied.
    DanglingLink,
    /// A device, FIFO or socket: not copied.
    Special,
}

/// What to do with a source of type `t` at directory level `level` (the
/// top directory is level 1); `depth` is `depth_search`'s limit.
pub fn source_action(t: FileType, recurse: bool, depth: Option<u32>, level: u32) -> SourceAction {
    match t {
        FileType::Regular => SourceAction::CopyFile,
        FileType::Dir if recurse && depth.is_none_or(|d| d > level) => SourceAction::Descend,
        FileType::Dir => SourceAction::DirNotCopied,
        FileType::Link => SourceAction::DanglingLink,
        _ => SourceAction::Special,
    }
}

/// Whether a source entry takes part in hard-link preservation
/// (`VerifyCopy`: `st_nlink > 1`; `CopyRegularFile` links regular files
/// only): its first name met in a recursive copy is copied, the others
/// become hard links to that copy.
pub fn preserves_hard_link(t: FileType, nlink: i64) -> bool {
    t == FileType::Regular && nlink > 1
}

/// `depth_search`'s `xdev`: whether a source entry on device `dev` is
/// skipped because the copy's source root is on `root_dev` (the server's
/// `st_dev`, of the entry itself, not of a link's target). Files and
/// directories alike, as `SourceSearchAndCopy`'s `DeviceBoundary`.
pub fn skips_device(xdev: bool, dev: u64, root_dev: u64) -> bool {
    xdev && dev != root_dev
}

/// The mode a directory of a recursive copy is given from its source
/// directory (VerifyCopiedFileAttributes): the source's bits with
/// `preserve`, none without (no `perms` either). Subdirectories get it on
/// the way in (not when collapsed); the destination root only with
/// `check_root`, after the walk.
pub fn copied_dir_mode(preserve: bool, st: &StatReply) -> Option<u32> {
    preserve.then(|| preserved_mode(st))
}

/// Whether purging inside `local` (as bytes) is allowed at all: a path of
/// fewer than two bytes (`/`, empty) is refused ("too dangerous", as cf-agent).
pub fn purge_allowed(local: &[u8]) -> bool {
    local.len() >= 2
}

/// Whether a local entry `name` is purged: it is not in the server's
/// listing. The whole raw listing counts, so names the copy skips or
/// refuses are never purged.
pub fn purges(name: &[u8], listed: &dyn Fn(&[u8]) -> bool) -> bool {
    !listed(name)
}

/// Whether the local entry `name` is a temporary that an interrupted
/// earlier run left: `<base>.cfnew` where `<base>` is listed by the server
/// and `<base>.cfnew` itself is not (then it is a real entry). Only
/// regular files are removed; that is for the caller to check.
pub fn is_stale_temp(name: &[u8], listed: &dyn Fn(&[u8]) -> bool) -> bool {
    match name.strip_suffix(TEMP_SUFFIX) {
        Some(base) => !base.is_empty() && listed(base) && !listed(name),
        None => false,
    }
}

/// The suffix of cf-agent's temporary file next to a destination.
pub const TEMP_SUFFIX: &[u8] = b".cfnew";

/// `<dest>.cfnew`, the temporary a transfer writes before the rename.
pub fn temp_name(dest: &[u8]) -> Vec<u8> {
    let mut t = dest.to_vec();
    t.extend_from_slice(TEMP_SUFFIX);
    t
}

/// `dir/name` on the server, with exactly one `/` between them.
pub fn join_remote(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Whether a finished transfer may be renamed into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferCheck {
    /// Complete, and the source did not change meanwhile.
    Sound,
    /// Fewer or more bytes were written than the STAT announced.
    Corrupt,
    /// The source's size or mtime changed during the transfer: fetch again.
    Changed,
}

/// Judge a transfer of `st` that wrote `written` bytes, against the STAT
/// taken `again` after the last byte. A size mismatch is checked first: a
/// file that grew desynchronises the stream, which is corrupt, not merely
/// changed (the agent checks it before it even looks at `again`).
pub fn check_transfer(st: &StatReply, written: u64, again: &StatReply) -> TransferCheck {
    if !wrote_whole(st, written) {
        TransferCheck::Corrupt
    } else if source_changed(st, again) {
        TransferCheck::Changed
    } else {
        TransferCheck::Sound
    }
}

/// Whether exactly the STATed size was written.
pub fn wrote_whole(st: &StatReply, written: u64) -> bool {
    written == st.size
}

/// Whether the source's content changed between two STATs (size or mtime;
/// a ctime change alone, such as a chmod on the hub, is not one).
pub fn source_changed(st: &StatReply, again: &StatReply) -> bool {
    again.size != st.size || again.mtime != st.mtime
}

/// The permission bits `preserve` gives the copy (no file type bits).
pub fn preserved_mode(st: &StatReply) -> u32 {
    st.mode & 0o7777
}

/// `copy_backup` of `body copy_from`: what happens to a destination file
/// that a copy replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    /// `"false"`: no backup.
    No,
    /// `"true"` (cf-agent's default): `<dest>.cfsaved`.
    Plain,
    /// `"timestamp"`: `<dest>_<agent start>_<canonified ctime(now)>.cfsaved`
    /// (e.g. `a.cf_1796617450_Mon_Dec__7_04_24_10_2026.cfsaved`).
    Timestamp,
}

impl Backup {
    /// cf-agent's spellings (`true`/`yes`/`on`, `false`/`no`/`off`, `timestamp`).
    pub fn parse(s: &str) -> Option<Backup> {
        Some(match s {
            "true" | "yes" | "on" => Backup::Plain,
            "false" | "no" | "off" => Backup::No,
            "timestamp" => Backup::Timestamp,
            _ => return None,
        })
    }
}

/// The backup a replaced file really gets: in a recursive copy with
/// `purge`, cf-agent makes the backup and then purges it with the rest of
/// what the server does not list, so none is left; elsewhere `backup` as set.
pub fn effective_backup(backup: Backup, recursive_purge: bool) -> Backup {
    if recursive_purge {
        Backup::No
    } else {
        backup
    }
}

/// The suffix of a backup.
pub const BACKUP_SUFFIX: &[u8] = b".cfsaved";

/// CFEngine's `CanonifyName`: every byte that is not an ASCII letter or
/// digit becomes `_`.
pub fn canonify(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| if b.is_ascii_alphanumeric() { b } else { b'_' })
        .collect()
}

/// C's `ctime()` text for `t` (seconds since the epoch, UTC), with its
/// trailing newline: `"Mon Dec  7 04:22:00 2026\n"`.
pub fn ctime_utc(t: i64) -> String {
    format!("{}\n", crate::civil::ctime_utc(t))
}

/// Where the old destination is kept when a copy replaces it, as
/// `CopyRegularFile` names it; `None` for [`Backup::No`]. `start` is the
/// agent's start time, `now` the time of the copy.
pub fn backup_name(dest: &[u8], backup: Backup, start: i64, now: i64) -> Option<Vec<u8>> {
    let mut b = dest.to_vec();
    match backup {
        Backup::No => return None,
        Backup::Plain => {}
        Backup::Timestamp => {
            b.extend_from_slice(format!("_{start}_").as_bytes());
            // 3.21 writes no `_` for ctime's trailing newline (observed:
            // `a.cf_1796617450_Mon_Dec__7_04_24_10_2026.cfsaved`).
            b.extend_from_slice(&canonify(ctime_utc(now).trim_end().as_bytes()));
        }
    }
    b.extend_from_slice(BACKUP_SUFFIX);
    Some(b)
}

/// A backup's place in `default_repository`: the repository joined with
/// the canonified full path of the backup (`ArchiveToRepository`).
pub fn repository_name(repository: &[u8], backup: &[u8]) -> Vec<u8> {
    let mut p = repository.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(&canonify(backup));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{Arbitrary, Gen};
    use quickcheck_macros::quickcheck;

    fn src(size: u64, mtime: i64, ctime: i64) -> StatReply {
        StatReply {
            file_type: FileType::Regular,
            mode: 0o644,
            lmode: 0,
            uid: 0,
            gid: 0,
            size,
            atime: 0,
            mtime,
            ctime,
            makeholes: false,
            ino: 1,
            nlink: 1,
            dev: 1,
            link_target: Vec::new(),
        }
    }

    fn file(size: u64, mtime: i64, ctime: i64) -> LocalFile {
        LocalFile {
            kind: LocalKind::File,
            size,
            mtime,
            ctime,
        }
    }

    const ALL: [Compare; 5] = [
        Compare::Mtime,
        Compare::Ctime,
        Compare::Atime,
        Compare::Digest,
        Compare::Exists,
    ];

    impl Arbitrary for Compare {
        fn arbitrary(g: &mut Gen) -> Compare {
            *g.choose(&ALL).expect("non-empty")
        }
    }

    #[derive(Debug, Clone)]
    struct Case {
        local: LocalFile,
        src: (u64, i64, i64),
    }

    impl Arbitrary for Case {
        fn arbitrary(g: &mut Gen) -> Case {
            // Small ranges so that equal sizes and times come up often.
            let t = |g: &mut Gen| i64::from(u8::arbitrary(g) % 4);
            let s = |g: &mut Gen| u64::from(u8::arbitrary(g) % 3);
            let kind = *g
                .choose(&[
                    LocalKind::File,
                    LocalKind::File,
                    LocalKind::Dir,
                    LocalKind::Symlink,
                    LocalKind::Other,
                ])
                .expect("non-empty");
            Case {
                local: LocalFile {
                    kind,
                    size: s(g),
                    mtime: t(g),
                    ctime: t(g),
                },
                src: (s(g), t(g), t(g)),
            }
        }
    }

    #[test]
    fn spellings() {
        assert_eq!(Compare::parse("mtime"), Some(Compare::Mtime));
        assert_eq!(Compare::parse("ctime"), Some(Compare::Ctime));
        assert_eq!(Compare::parse("atime"), Some(Compare::Atime));
        for d in ["digest", "hash", "binary"] {
            assert_eq!(Compare::parse(d), Some(Compare::Digest));
        }
        assert_eq!(Compare::parse("exists"), Some(Compare::Exists));
        assert_eq!(Compare::parse("Digest"), None);
        assert_eq!(Compare::parse(""), None);
        assert!(Compare::Atime.uses_digest() && Compare::Digest.uses_digest());
        assert!(!Compare::Ctime.uses_digest() && !Compare::Mtime.uses_digest());
    }

    #[test]
    fn compare_table() {
        use FileVerdict::*;
        let s = src(10, 100, 100);
        // (local, mtime, ctime, atime, digest, exists)
        let rows: [(LocalFile, [FileVerdict; 5]); 5] = [
            // same size and times
            (
                file(10, 100, 100),
                [UpToDate, UpToDate, AskDigest, AskDigest, UpToDate],
            ),
            // older mtime
            (
                file(10, 99, 100),
                [Fetch, Fetch, Fetch, AskDigest, UpToDate],
            ),
            // older ctime only: mtime keeps it
            (
                file(10, 100, 99),
                [UpToDate, Fetch, Fetch, AskDigest, UpToDate],
            ),
            // newer but another size
            (
                file(11, 200, 200),
                [UpToDate, UpToDate, Fetch, Fetch, UpToDate],
            ),
            // newer, same size
            (
                file(10, 200, 200),
                [UpToDate, UpToDate, AskDigest, AskDigest, UpToDate],
            ),
        ];
        for (local, want) in rows {
            for (c, w) in ALL.iter().zip(want) {
                assert_eq!(plan_file(Some(&local), &s, *c, false), w, "{local:?} {c:?}");
            }
        }
    }

    #[test]
    fn types_in_the_way() {
        let s = src(1, 1, 1);
        let with = |kind| LocalFile {
            kind,
            ..file(1, 1, 1)
        };
        for c in ALL {
            assert_eq!(
                plan_file(Some(&with(LocalKind::Dir)), &s, c, false),
                FileVerdict::TypeMismatch
            );
            assert_eq!(
                plan_file(Some(&with(LocalKind::Symlink)), &s, c, false),
                FileVerdict::Fetch
            );
            assert_eq!(
                plan_file(Some(&with(LocalKind::Other)), &s, c, true),
                FileVerdict::TypeMismatch
            );
            assert_eq!(plan_file(None, &s, c, true), FileVerdict::Fetch);
        }
    }

    #[test]
    fn force_update() {
        use FileVerdict::*;
        assert_eq!(forced(UpToDate, true), Fetch);
        assert_eq!(forced(AskDigest, true), Fetch);
        assert_eq!(forced(TypeMismatch, true), TypeMismatch);
        assert_eq!(forced(UpToDate, false), UpToDate);
    }

    #[test]
    fn md5_replies() {
        let ok = |r: Result<bool, String>| Ok::<_, ()>(r);
        assert!(md5_reply_differs(&ok(Ok(true))));
        assert!(!md5_reply_differs(&ok(Ok(false))));
        assert!(!md5_reply_differs(&ok(Err("BAD: denied".into()))));
        assert!(md5_reply_differs(&Err::<Result<bool, String>, _>("lost")));
    }

    #[test]
    fn source_actions() {
        use SourceAction::*;
        assert_eq!(source_action(FileType::Regular, false, None, 1), CopyFile);
        assert_eq!(source_action(FileType::Dir, false, None, 1), DirNotCopied);
        assert_eq!(source_action(FileType::Dir, true, None, 50), Descend);
        assert_eq!(source_action(FileType::Dir, true, Some(2), 1), Descend);
        assert_eq!(source_action(FileType::Dir, true, Some(2), 2), DirNotCopied);
        assert_eq!(source_action(FileType::Link, true, None, 1), DanglingLink);
        assert_eq!(source_action(FileType::Fifo, true, None, 1), Special);
    }

    #[test]
    fn directory_modes() {
        let mut d = src(0, 0, 0);
        d.file_type = FileType::Dir;
        d.mode = 0o40751;
        assert_eq!(copied_dir_mode(true, &d), Some(0o751));
        assert_eq!(copied_dir_mode(false, &d), None);
    }

    #[test]
    fn hard_link_candidates() {
        assert!(preserves_hard_link(FileType::Regular, 2));
        assert!(!preserves_hard_link(FileType::Regular, 1));
        assert!(!preserves_hard_link(FileType::Dir, 3));
        assert!(!preserves_hard_link(FileType::Link, 2));
    }

    #[test]
    fn device_boundaries() {
        assert!(!skips_device(false, 1, 2), "xdev off: every device");
        assert!(skips_device(true, 1, 2));
        assert!(!skips_device(true, 2, 2));
    }

    #[test]
    fn purge_and_temps() {
        let listed = |n: &[u8]| [&b"a"[..], b"b", b"c.cfnew"].contains(&n);
        assert!(!purge_allowed(b"/"));
        assert!(!purge_allowed(b""));
        assert!(purge_allowed(b"/x"));
        assert!(purges(b"z", &listed));
        assert!(!purges(b"a", &listed));
        assert!(is_stale_temp(b"a.cfnew", &listed));
        assert!(!is_stale_temp(b"z.cfnew", &listed), "base not listed");
        assert!(!is_stale_temp(b".cfnew", &listed), "empty base");
        assert!(!is_stale_temp(b"a", &listed));
        let listed2 = |n: &[u8]| [&b"c"[..], b"c.cfnew"].contains(&n);
        assert!(!is_stale_temp(b"c.cfnew", &listed2), "the server lists it");
    }

    #[test]
    fn names() {
        assert_eq!(temp_name(b"/x/y"), b"/x/y.cfnew");
        assert_eq!(join_remote(b"masterfiles", b"a"), b"masterfiles/a");
        assert_eq!(join_remote(b"/", b"a"), b"/a");
        assert_eq!(join_remote(b"d/", b"a"), b"d/a");
        assert_eq!(preserved_mode(&src(0, 0, 0)), 0o644);
    }

    #[test]
    fn transfer_checks() {
        let s = src(10, 5, 5);
        assert_eq!(check_transfer(&s, 10, &s), TransferCheck::Sound);
        assert_eq!(check_transfer(&s, 9, &s), TransferCheck::Corrupt);
        assert_eq!(
            check_transfer(&s, 10, &src(11, 5, 5)),
            TransferCheck::Changed
        );
        assert_eq!(
            check_transfer(&s, 10, &src(10, 6, 5)),
            TransferCheck::Changed
        );
        // ctime alone (a chmod on the hub) is not a content change
        assert_eq!(check_transfer(&s, 10, &src(10, 5, 9)), TransferCheck::Sound);
        // a grown file is corrupt, whatever the re-STAT says
        assert_eq!(
            check_transfer(&s, 11, &src(11, 6, 6)),
            TransferCheck::Corrupt
        );
    }

    #[test]
    fn backups_as_cf_agent_names_them() {
        assert_eq!(Backup::parse("true"), Some(Backup::Plain));
        assert_eq!(Backup::parse("false"), Some(Backup::No));
        assert_eq!(Backup::parse("timestamp"), Some(Backup::Timestamp));
        assert_eq!(Backup::parse("maybe"), None);
        assert_eq!(
            backup_name(b"/d/f.cf", Backup::Plain, 1, 2).unwrap(),
            b"/d/f.cf.cfsaved"
        );
        assert_eq!(backup_name(b"/d/f", Backup::No, 1, 2), None);
        assert_eq!(ctime_utc(0), "Thu Jan  1 00:00:00 1970\n");
        assert_eq!(ctime_utc(1_796_616_365), "Mon Dec  7 04:06:05 2026\n");
        assert_eq!(
            backup_name(b"/d/f", Backup::Timestamp, 1_796_616_000, 1_796_616_365).unwrap(),
            b"/d/f_1796616000_Mon_Dec__7_04_06_05_2026.cfsaved"
        );
        assert_eq!(
            repository_name(b"/repo", b"/d/f.cfsaved"),
            b"/repo/_d_f_cfsaved"
        );
        assert_eq!(repository_name(b"/repo/", b"x"), b"/repo/x");
        assert_eq!(effective_backup(Backup::Plain, true), Backup::No);
        assert_eq!(
            effective_backup(Backup::Timestamp, false),
            Backup::Timestamp
        );
    }

    #[quickcheck]
    fn canonified_names_have_no_separators(s: Vec<u8>) -> bool {
        let c = canonify(&s);
        c.len() == s.len() && c.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    }

    #[quickcheck]
    fn a_missing_destination_is_always_fetched(c: Compare, tc: bool, size: u64) -> bool {
        plan_file(None, &src(size, 1, 1), c, tc) == FileVerdict::Fetch
    }

    #[quickcheck]
    fn exists_never_replaces_a_file(case: Case) -> bool {
        let (s, m, c) = case.src;
        case.local.kind != LocalKind::File
            || plan_file(Some(&case.local), &src(s, m, c), Compare::Exists, false)
                == FileVerdict::UpToDate
    }

    #[quickcheck]
    fn only_digest_modes_ask_for_a_digest_and_only_at_equal_sizes(
        case: Case,
        c: Compare,
        tc: bool,
    ) -> bool {
        let (s, m, ct) = case.src;
        let v = plan_file(Some(&case.local), &src(s, m, ct), c, tc);
        v != FileVerdict::AskDigest || (c.uses_digest() && case.local.size == s)
    }

    #[quickcheck]
    fn atime_fetches_whenever_ctime_or_digest_would(case: Case) -> bool {
        let (s, m, c) = case.src;
        let st = src(s, m, c);
        let at = plan_file(Some(&case.local), &st, Compare::Atime, false);
        let ct = plan_file(Some(&case.local), &st, Compare::Ctime, false);
        let dg = plan_file(Some(&case.local), &st, Compare::Digest, false);
        (ct != FileVerdict::Fetch && dg != FileVerdict::Fetch) || at == FileVerdict::Fetch
    }

    #[quickcheck]
    fn mtime_is_never_stricter_than_ctime(case: Case) -> bool {
        let (s, m, c) = case.src;
        let st = src(s, m, c);
        plan_file(Some(&case.local), &st, Compare::Mtime, false) != FileVerdict::Fetch
            || plan_file(Some(&case.local), &st, Compare::Ctime, false) == FileVerdict::Fetch
    }

    #[quickcheck]
    fn type_check_only_turns_replacements_into_refusals(case: Case, c: Compare) -> bool {
        let (s, m, ct) = case.src;
        let st = src(s, m, ct);
        let loose = plan_file(Some(&case.local), &st, c, false);
        let strict = plan_file(Some(&case.local), &st, c, true);
        loose == strict || (loose == FileVerdict::Fetch && strict == FileVerdict::TypeMismatch)
    }

    #[quickcheck]
    fn a_listed_name_is_never_purged_nor_swept_unless_its_temp(
        names: Vec<Vec<u8>>,
        n: Vec<u8>,
    ) -> bool {
        let listed = |x: &[u8]| names.iter().any(|m| m.as_slice() == x);
        if listed(&n) {
            !purges(&n, &listed) && !is_stale_temp(&n, &listed)
        } else {
            purges(&n, &listed)
        }
    }

    #[quickcheck]
    fn joined_paths_end_in_the_name(dir: Vec<u8>, name: Vec<u8>) -> bool {
        let j = join_remote(&dir, &name);
        j.ends_with(&name) && j.starts_with(&dir) && j.len() <= dir.len() + name.len() + 1
    }
}
