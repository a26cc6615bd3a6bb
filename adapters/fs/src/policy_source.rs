//! The filesystem answers the policy loader needs: reading policy files,
//! canonicalising path promisers (realpath + is-dir) and `fileexists()`.

use rcf_core::bytestr;
use rcf_core::policy::{Canon, PolicySource};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The bytes a [`bytestr`]-encoded policy path names.
fn fs_path(p: &str) -> PathBuf {
    Path::new(OsStr::from_bytes(&bytestr::decode(p))).to_path_buf()
}

/// Largest policy file read; larger files are refused, not truncated.
pub const MAX_POLICY_FILE: u64 = 16 * 1024 * 1024;

/// [`PolicySource`] over the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsPolicySource;

impl PolicySource for FsPolicySource {
    /// Reads at most [`MAX_POLICY_FILE`] bytes; a bigger file is an error so
    /// a huge or endless file (a FIFO, /dev/zero) cannot exhaust memory.
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        let f = std::fs::File::open(fs_path(path)).map_err(|e| e.to_string())?;
        let meta = f.metadata().map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("is a directory".into());
        }
        let mut buf = Vec::new();
        f.take(MAX_POLICY_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        if buf.len() as u64 > MAX_POLICY_FILE {
            return Err(format!("larger than {MAX_POLICY_FILE} bytes"));
        }
        Ok(buf)
    }

    /// `realpath()` like cf-serverd: ENOENT (including a dangling link)
    /// is `Missing`, anything else is `Failed`.
    fn canonicalize(&self, path: &str) -> Canon {
        match std::fs::canonicalize(fs_path(path)) {
            Ok(p) => {
                let is_dir = std::fs::metadata(&p).map(|m| m.is_dir()).unwrap_or(false);
                Canon::Resolved {
                    path: bytestr::encode(p.as_os_str().as_bytes()).into_owned(),
                    is_dir,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Canon::Missing,
            Err(e) => Canon::Failed(e.to_string()),
        }
    }

    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(fs_path(path)).is_ok()
    }

    fn is_symlink(&self, path: &str) -> bool {
        std::fs::symlink_metadata(fs_path(path))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_like_realpath() {
        let d = std::env::temp_dir().join(format!("rcf-fs-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("dir")).unwrap();
        std::os::unix::fs::symlink(d.join("dir"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dead")).unwrap();
        let s = FsPolicySource;
        let real = std::fs::canonicalize(d.join("dir"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            s.canonicalize(&d.join("link").to_string_lossy()),
            Canon::Resolved {
                path: real,
                is_dir: true
            }
        );
        assert_eq!(
            s.canonicalize(&d.join("dead").to_string_lossy()),
            Canon::Missing
        );
        assert!(s.is_symlink(&d.join("dead").to_string_lossy()));
        assert_eq!(
            s.canonicalize(&d.join("missing").to_string_lossy()),
            Canon::Missing
        );
        assert!(s.read(&d.join("dir").to_string_lossy()).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
