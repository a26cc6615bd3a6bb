//! Policy interop: the rcf policy parser against the real masterfiles, and
//! rcf's access summary against the real `cf-serverd -v`.

use std::path::{Path, PathBuf};

fn masterfiles_dirs() -> Vec<PathBuf> {
    ["/usr/share/cfengine3/masterfiles", "/var/lib/cfengine3/masterfiles"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect()
}

fn cf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            cf_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "cf") {
            out.push(p);
        }
    }
}

/// Every `.cf` file of the masterfiles framework Debian ships parses.
#[test]
fn every_masterfiles_file_parses() {
    let dirs = masterfiles_dirs();
    assert!(!dirs.is_empty(), "no masterfiles found: install the cfengine3 package");
    let mut files = Vec::new();
    for d in &dirs {
        cf_files(d, &mut files);
    }
    assert!(files.len() > 50, "only {} .cf files found", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if let Err(e) = rcf_core::policy::parse_policy(&f.display().to_string(), &text) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{} of {} files failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}
