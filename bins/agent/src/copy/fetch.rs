//! One file's transfer, on any connection of the run: the safe sequence
//! of [`fetch`] and the [`Link`] it runs over.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use rcf_core::client::copy_plan;
use rcf_core::client::{GetFailure, Level};
use rcf_core::reply::StatReply;
use rcf_smol::{Conn, Error as NetError};

use super::pool::Job;
use super::{Outcome, Run, RunError, MAX_ATTEMPTS};
use crate::output::Output;

/// What the transfer of one file needs from the copy's options.
#[derive(Debug, Clone)]
pub(super) struct FetchOpts {
    pub(super) verify: bool,
    pub(super) preserve: bool,
    /// `stealth`: the copy keeps the source's atime and mtime.
    pub(super) stealth: bool,
    /// `copy_backup` for a replaced destination.
    pub(super) backup: copy_plan::Backup,
    /// `default_repository`: where backups go.
    pub(super) repository: Option<std::rc::Rc<Path>>,
    /// The agent's start time (a timestamped backup's name holds it).
    pub(super) start: i64,
}

/// A connection one file's transfer runs on: the run's main connection
/// (which reconnects, or stops the run) or a transfer worker's (which,
/// once gone, hands the file back to the pool).
pub(super) trait Link {
    /// Whether a connection is ready for the next request, reconnecting if
    /// this link may; `false`: hand the file back.
    async fn ready(&mut self, what: &str) -> Result<bool, RunError>;
    /// The connection [`Link::ready`] made sure of.
    fn conn(&mut self) -> &mut Conn;
    fn usable(&self) -> bool;
    /// The connection failed: drop it.
    fn lost(&mut self);
    /// A fresh STAT of `src`; `None`: no connection left, hand the file back.
    async fn stat_again(
        &mut self,
        src: &[u8],
    ) -> Result<Option<Result<StatReply, String>>, RunError>;
    /// Update (or forget) the STAT cache entry of `src`.
    fn remember(&mut self, src: &[u8], st: Option<&StatReply>);
    fn server(&self) -> String;
    /// How a connection error during a transfer is logged.
    fn conn_error_level(&self) -> Level;
    /// Whether a file whose transfer failed with the connection goes back
    /// to the pool (a worker) rather than being retried here (the main
    /// connection, which reconnects).
    fn hands_back(&self) -> bool;
}

impl Link for Run {
    async fn ready(&mut self, what: &str) -> Result<bool, RunError> {
        self.ensure(what).await.map(|()| true)
    }
    fn conn(&mut self) -> &mut Conn {
        self.client.as_mut().expect("ensured")
    }
    fn usable(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.is_usable())
    }
    fn lost(&mut self) {
        self.drop_client();
    }
    async fn stat_again(
        &mut self,
        src: &[u8],
    ) -> Result<Option<Result<StatReply, String>>, RunError> {
        self.stat_fresh(src).await.map(Some)
    }
    fn remember(&mut self, src: &[u8], st: Option<&StatReply>) {
        match st {
            Some(st) => {
                self.stat_cache.insert(src.to_vec(), st.clone());
            }
            None => {
                self.stat_cache.remove(src);
            }
        }
    }
    fn server(&self) -> String {
        self.server_text()
    }
    fn conn_error_level(&self) -> Level {
        Level::Error
    }
    fn hands_back(&self) -> bool {
        false
    }
}

pub(super) enum Fetched {
    Done(Outcome),
    /// The link's connection is gone: another connection takes the file.
    Requeue,
}

/// After a transfer the source changed under: STAT it again on `link` for
/// the next attempt. `Some` ends the file here (its connection is gone, so
/// another one takes it, or the source can no longer be STATed); `None`:
/// try again with the new STAT in `job`.
async fn restat<L: Link>(
    link: &mut L,
    job: &mut Job,
    src: &[u8],
    src_text: &str,
    server: &str,
) -> Result<Option<Fetched>, RunError> {
    Ok(match link.stat_again(src).await? {
        None => {
            job.restat = true;
            Some(Fetched::Requeue)
        }
        Some(Ok(st2)) => {
            job.st = st2;
            None
        }
        Some(Err(t)) => Some(Fetched::Done(Outcome::Failed(format!(
            "Can't stat file '{src_text}' on '{server}': {t}"
        )))),
    })
}

/// The safe per-file sequence, on any connection: `<dest>.cfnew` (O_EXCL,
/// 0600), GET exactly `st.size` bytes, fsync (off the executor thread,
/// while the source is re-STATed), compare, optional verify, rename; a
/// changed source or a lost connection is fetched again, up to
/// [`MAX_ATTEMPTS`] in all.
pub(super) async fn fetch<L: Link>(
    link: &mut L,
    job: &mut Job,
    fo: FetchOpts,
    out: &Output,
) -> Result<Fetched, RunError> {
    let src = job.src.clone();
    let src = &src[..];
    let dest = job.dest.clone();
    let dest = &dest;
    let src_text = String::from_utf8_lossy(src).into_owned();
    let tmp = temp_path(dest);
    if job.restat {
        match link.stat_again(src).await? {
            None => return Ok(Fetched::Requeue),
            Some(Ok(st2)) => {
                job.st = st2;
                job.restat = false;
            }
            Some(Err(t)) => {
                return Ok(Fetched::Done(Outcome::Failed(format!(
                    "Can't stat file '{src_text}' on '{}': {t}",
                    link.server()
                ))))
            }
        }
    }
    let failed = |m: String| Ok(Fetched::Done(Outcome::Failed(m)));
    while job.attempt <= MAX_ATTEMPTS {
        let attempt = job.attempt;
        if !link.ready(&src_text).await? {
            return Ok(Fetched::Requeue);
        }
        job.attempt += 1;
        let st = job.st.clone();
        let _ = fs::remove_file(&tmp);
        let file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) => {
                return failed(format!(
                    "Can't create temporary file '{}': {e}",
                    tmp.display()
                ))
            }
        };
        let mut w = BufWriter::with_capacity(64 * 1024, file);
        let mut done = 0u64;
        let total = st.size;
        let res = if st.size == 0 {
            out.progress(&src_text, 0, 0);
            Ok(Ok(()))
        } else {
            let name = src_text.clone();
            link.conn()
                .get(src, st.size, |b| {
                    w.write_all(b)?;
                    done += b.len() as u64;
                    out.progress(&name, done, total);
                    Ok(())
                })
                .await
        };
        let server = link.server();
        match res {
            Err(NetError::Io(e)) if link.usable() => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                return failed(format!("Failed to write '{}': {e}", tmp.display()));
            }
            Err(e) => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                out.log(
                    link.conn_error_level(),
                    &format!("Connection error when copying '{server}:{src_text}': {e}"),
                );
                link.lost();
                if link.hands_back() {
                    // Not the source's fault: another connection tries it
                    // without spending an attempt.
                    job.attempt = attempt;
                    return Ok(Fetched::Requeue);
                }
                continue;
            }
            Ok(Err(GetFailure::Refused(_))) | Ok(Err(GetFailure::Denied)) => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                return failed(format!("Network access to '{server}:{src_text}' denied"));
            }
            Ok(Err(GetFailure::Changed)) => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                out.log(
                    Level::Notice,
                    &format!(
                        "Source '{server}:{src_text}' changed while copying (attempt {attempt})"
                    ),
                );
                link.lost();
                link.remember(src, None);
                if let Some(done) = restat(link, job, src, &src_text, &server).await? {
                    return Ok(done);
                }
                continue;
            }
            Ok(Ok(())) => {}
        }
        let file = match w.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return failed(format!(
                    "Failed to write '{}': {}",
                    tmp.display(),
                    e.error()
                ));
            }
        };
        // fsync on a blocking thread while the re-STAT below makes its
        // round trip: other transfers (and this STAT) go on meanwhile.
        let sync = smol::unblock(move || {
            file.sync_all()?;
            Ok::<u64, std::io::Error>(file.metadata().map(|m| m.len()).unwrap_or(u64::MAX))
        });
        // Did the source change between the STAT and the end of the GET?
        // (A file that grew desynchronises the stream; this STAT then
        // fails to parse and the connection is dropped.)
        let (synced, again) = smol::future::zip(sync, link.conn().stat(src)).await;
        let len = match synced {
            Ok(len) => len,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if again.is_err() {
                    link.lost();
                }
                return failed(format!("Failed to fsync '{}': {e}", tmp.display()));
            }
        };
        if !copy_plan::wrote_whole(&st, len) {
            let _ = fs::remove_file(&tmp);
            if again.is_err() {
                link.lost();
            }
            return failed(format!(
                "New file '{}' seems to have been corrupted in transit, destination size ({len}) differs from the source size ({}), aborting.",
                dest.display(),
                st.size
            ));
        }
        let again = match again {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                // (On a transfer worker this is usually its connection
                // going away: verbose, the file is fetched elsewhere.)
                out.log(
                    if link.hands_back() {
                        Level::Verbose
                    } else {
                        Level::Notice
                    },
                    &format!(
                        "Source '{server}:{src_text}' changed while copying ({e}), fetching again"
                    ),
                );
                link.lost();
                link.remember(src, None);
                if link.hands_back() {
                    // A desynchronised stream or a lost connection: the
                    // next connection STATs again, without spending an attempt.
                    job.attempt = attempt;
                    job.restat = true;
                    return Ok(Fetched::Requeue);
                }
                if let Some(done) = restat(link, job, src, &src_text, &server).await? {
                    return Ok(done);
                }
                continue;
            }
        };
        match again {
            Ok(st2) if copy_plan::source_changed(&st, &st2) => {
                let _ = fs::remove_file(&tmp);
                out.log(Level::Notice, &format!("Source '{server}:{src_text}' changed while copying (attempt {attempt}), fetching again"));
                link.remember(src, Some(&st2));
                job.st = st2;
                continue;
            }
            Ok(_) => {}
            Err(t) => {
                let _ = fs::remove_file(&tmp);
                return failed(format!(
                    "Source '{server}:{src_text}' disappeared while copying: {t}"
                ));
            }
        }
        if fo.verify {
            let digest = match md5_file(&tmp) {
                Ok(d) => d,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return failed(format!("Can't read back '{}': {e}", tmp.display()));
                }
            };
            match link.conn().md5(src, digest).await {
                Ok(Ok(false)) => out.log(
                    Level::Verbose,
                    &format!(
                        "Verified '{}' against '{server}:{src_text}'",
                        dest.display()
                    ),
                ),
                Ok(Ok(true)) => {
                    let _ = fs::remove_file(&tmp);
                    return failed(format!(
                        "Verification of '{}' against '{server}:{src_text}' failed: digests differ",
                        dest.display()
                    ));
                }
                Ok(Err(t)) => {
                    let _ = fs::remove_file(&tmp);
                    return failed(format!(
                        "Verification of '{}' refused by the server: {t}",
                        dest.display()
                    ));
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    link.lost();
                    return failed(format!(
                        "Connection error when verifying '{}': {e}",
                        dest.display()
                    ));
                }
            }
        }
        if fo.preserve {
            let _ = fs::set_permissions(
                &tmp,
                fs::Permissions::from_mode(copy_plan::preserved_mode(&st)),
            );
            if rustix::process::geteuid().is_root() {
                let _ = std::os::unix::fs::chown(&tmp, Some(st.uid), Some(st.gid));
            }
        }
        if fo.stealth {
            let at =
                |t: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
            let times = fs::FileTimes::new()
                .set_accessed(at(st.atime))
                .set_modified(at(st.mtime));
            if let Err(e) = fs::File::options()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.set_times(times))
            {
                out.log(
                    Level::Verbose,
                    &format!("Can't set the times of '{}': {e}", tmp.display()),
                );
            }
        }
        let backup = keep_backup(dest, &fo, out);
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&tmp);
            return failed(format!(
                "Can't rename '{}' to '{}': {e}",
                tmp.display(),
                dest.display()
            ));
        }
        out.log(
            Level::Info,
            &format!(
                "Updated file '{}' from '{server}:{src_text}'",
                dest.display()
            ),
        );
        if let (Some(b), Some(repo)) = (backup, &fo.repository) {
            archive(&b, repo, out);
        }
        return Ok(Fetched::Done(Outcome::Copied));
    }
    let _ = fs::remove_file(&tmp);
    failed(format!(
        "Source '{}:{src_text}' kept changing while copying, giving up after {MAX_ATTEMPTS} attempts",
        link.server()
    ))
}

/// `<dest>.cfnew`, cf-agent's temporary name.
pub(super) fn temp_path(dest: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(copy_plan::temp_name(
        dest.as_os_str().as_encoded_bytes(),
    )))
}

/// MD5 of a local file, streamed.
pub fn md5_file(p: &Path) -> std::io::Result<[u8; 16]> {
    let mut f = fs::File::open(p)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Keep the destination a copy is about to replace, as `copy_backup`
/// says: a hard link under the backup's name (the old inode, as
/// cf-agent's rename leaves it), made before the new file is renamed over
/// the destination so the destination never goes missing. An older backup
/// of that name is replaced. Returns the backup's path.
fn keep_backup(dest: &Path, fo: &FetchOpts, out: &Output) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    if !fs::symlink_metadata(dest).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let name = copy_plan::backup_name(
        dest.as_os_str().as_encoded_bytes(),
        fo.backup,
        fo.start,
        unix_now(),
    )?;
    let b = PathBuf::from(std::ffi::OsString::from_vec(name));
    if fs::symlink_metadata(&b).is_ok_and(|m| !m.is_dir()) {
        let _ = fs::remove_file(&b);
    }
    match fs::hard_link(dest, &b).or_else(|_| fs::copy(dest, &b).map(|_| ())) {
        Ok(()) => {
            out.log(
                Level::Info,
                &format!("Backed up '{}' as '{}'", dest.display(), b.display()),
            );
            Some(b)
        }
        Err(e) => {
            out.log(
                Level::Error,
                &format!(
                    "Failed to back up '{}' as '{}': {e}",
                    dest.display(),
                    b.display()
                ),
            );
            None
        }
    }
}

/// Move a backup into `default_repository` (`ArchiveToRepository`).
fn archive(backup: &Path, repo: &Path, out: &Output) {
    use std::os::unix::ffi::OsStringExt;
    let to = PathBuf::from(std::ffi::OsString::from_vec(copy_plan::repository_name(
        repo.as_os_str().as_encoded_bytes(),
        backup.as_os_str().as_encoded_bytes(),
    )));
    let _ = fs::create_dir_all(repo);
    match fs::copy(backup, &to) {
        Ok(_) => {
            out.log(
                Level::Info,
                &format!(
                    "Moved '{}' to repository location '{}'",
                    backup.display(),
                    to.display()
                ),
            );
            if let Err(e) = fs::remove_file(backup) {
                out.log(
                    Level::Error,
                    &format!(
                        "Failed to clean backup '{}' after archiving: {e}",
                        backup.display()
                    ),
                );
            }
        }
        Err(e) => out.log(
            Level::Info,
            &format!(
                "Failed to move '{}' to repository location '{}': {e}",
                backup.display(),
                to.display()
            ),
        ),
    }
}
