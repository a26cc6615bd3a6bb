//! `--trust-store postgresql://…`: `-s` (the fleet's lastseen, in cf-key
//! 3.21's exact format), `-r` (revoke the keys and forget their lastseen
//! records), `-t` and `--list-trusted` on the shared PostgreSQL trust store
//! of rcf-serverd replicas, and
//! `--export-ppkeys DIR` / `--import-ppkeys DIR` to move trusted keys
//! between it and a ppkeys directory (the single-node default).
//!
//! Kept apart from main.rs so the ppkeys code paths stay exactly as they
//! are; main only hands over when `--trust-store` is given.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rcf_core::keys::backend::TrustBackend;
use rcf_core::keys::ppkeys;
use rcf_core::keys::trust::TrustStore;
use rcf_core::keys::DigestKind;
use rcf_fs::ppkeys::FsPpkeys;
use rcf_pg::PgTrustStore;

use crate::{load_public, split_trust_arg, utc_text, Cli, Level, Log};

/// How long rcf-key waits for the database per statement.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Run the command when `--trust-store` is given; `None` otherwise (the
/// ppkeys directory is used as before).
pub(crate) fn dispatch(cli: &Cli, log: &Log) -> Option<u8> {
    let url = cli.trust_store.as_deref()?;
    if cli.no_truncate && !(cli.show_hosts || cli.list_trusted) {
        log.error("--no-truncate / -N option is only for --show-hosts / -s and --list-trusted");
        return Some(1);
    }
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        log.error(&format!(
            "--trust-store: '{url}' is not a postgresql:// URL (the ppkeys directory is the default, without --trust-store)"
        ));
        return Some(1);
    }
    let store = match PgTrustStore::new(url, DigestKind::Md5, TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            log.error(&e.to_string());
            return Some(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log.error(&format!("cannot start the runtime: {e}"));
            return Some(1);
        }
    };
    Some(rt.block_on(async {
        if let Err(e) = store.check().await {
            log.error(&e.to_string());
            return 1;
        }
        if let Some(dir) = &cli.export_ppkeys {
            export(log, &store, dir).await
        } else if let Some(dir) = &cli.import_ppkeys {
            import(log, &store, dir).await
        } else if cli.list_trusted {
            show(cli, log, &store).await
        } else if cli.show_hosts {
            show_lastseen(cli, log, &store).await
        } else if let Some(target) = &cli.remove_keys {
            revoke(log, &store, target).await
        } else if let Some(arg) = &cli.trust_key {
            trust(log, &store, arg).await
        } else {
            log.error("--trust-store applies to -s, -r, -t, --list-trusted, --export-ppkeys and --import-ppkeys");
            1
        }
    }))
}

async fn show(cli: &Cli, log: &Log, store: &PgTrustStore) -> u8 {
    let keys = match store.list().await {
        Ok(k) => k,
        Err(e) => {
            log.error(&format!("Unable to list trusted keys: {e}"));
            return 1;
        }
    };
    let keys: Vec<_> = keys
        .into_iter()
        .filter(|k| k.revoked_at.is_none())
        .collect();
    let mut out = std::io::stdout().lock();
    // Same columns as the ppkeys listing; IP is where the key was first
    // trusted from.
    let mut row = |user: &str, ip: &str, key: &str, when: &str| {
        let user = if user.is_empty() { "(none)" } else { user };
        if cli.no_truncate {
            writeln!(out, "{user}\t{ip}\t{key}")
        } else {
            writeln!(out, "{:<20.20} {:<40.40} {:<36} {}", user, ip, key, when)
        }
        .is_ok()
    };
    let mut ok = row("User", "IP", "Key", "Trusted (UTC)");
    for k in &keys {
        let when = k
            .trusted_at
            .and_then(|t| u64::try_from(t).ok())
            .map(utc_text)
            .unwrap_or_else(|| "-".into());
        ok &= row(
            &k.user,
            k.from.as_deref().unwrap_or("-"),
            &k.id.to_string(),
            &when,
        );
    }
    ok &= writeln!(out, "Total Entries: {}", keys.len()).is_ok();
    u8::from(!ok)
}

/// cf-key 3.21's `-s` table of the fleet's lastseen (see
/// [`crate::print_lastseen`]).
async fn show_lastseen(cli: &Cli, log: &Log, store: &PgTrustStore) -> u8 {
    let all = match store.lastseen().await {
        Ok(a) => a,
        Err(e) => {
            log.error(&format!("Unable to show lastseen database: {e}"));
            return 1;
        }
    };
    let rows: Vec<crate::SeenRow> = all
        .into_iter()
        .map(|e| crate::SeenRow {
            direction: e.direction,
            address: e.address,
            lastseen: e.quality.lastseen,
            key: e.key.to_string(),
        })
        .collect();
    crate::print_lastseen(cli, &rows)
}

/// `-r` on the shared store: for each address a host name resolves to
/// (or the key id, or the address), forget its lastseen records and revoke
/// its keys. 252/253 when nothing was found for a key id / an address.
async fn revoke(log: &Log, store: &PgTrustStore, target: &str) -> u8 {
    let targets = match crate::remove_targets(log, target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut found = false;
    for parsed in &targets {
        let forgotten = match store.forget_lastseen(parsed).await {
            Ok(n) => n,
            Err(e) => {
                log.error(&format!(
                    "Unable to remove lastseen entries for '{target}': {e}"
                ));
                return 255;
            }
        };
        if forgotten > 0 {
            found = true;
            log.log(
                Level::Info,
                &format!("Removed {forgotten} corresponding entries from lastseen database."),
            );
        }
        match store.revoke(parsed).await {
            Ok(done) => {
                for d in done {
                    found = true;
                    log.log(Level::Info, &format!("Revoked key '{d}'"));
                }
            }
            Err(e) => {
                log.error(&format!("Unable to revoke keys for '{target}': {e}"));
                return 255;
            }
        }
    }
    if found {
        return 0;
    }
    crate::none_found(log, &targets, target, "key")
}

async fn trust(log: &Log, store: &PgTrustStore, arg: &str) -> u8 {
    let (user, ip, file) = split_trust_arg(arg);
    if let Err(e) = ppkeys::check_user(&user) {
        log.error(&format!("Cannot trust key '{file}': {e}"));
        return 1;
    }
    let Some(key) = load_public(log, Path::new(&file), false) else {
        return 1;
    };
    match store.trust(&user, &key, ip.as_deref()).await {
        Ok(new) => {
            let what = if new { "Trusted" } else { "Already trusted:" };
            log.log(
                Level::Verbose,
                &format!("{what} key in '{file}' for {user}"),
            );
            0
        }
        Err(e) => {
            log.error(&format!("Unable to trust the key in '{file}': {e}"));
            1
        }
    }
}

/// Every trusted (unrevoked) key of the database into `dir` as
/// `<user>-<id>.pub`, never overwriting a file already there.
async fn export(log: &Log, store: &PgTrustStore, dir: &Path) -> u8 {
    let keys = match store.list().await {
        Ok(k) => k,
        Err(e) => {
            log.error(&format!("Unable to list trusted keys: {e}"));
            return 1;
        }
    };
    let target = TrustStore::new(FsPpkeys::new(dir), DigestKind::Md5);
    let (mut written, mut kept) = (0usize, 0usize);
    for k in keys.iter().filter(|k| k.revoked_at.is_none()) {
        let Some(key) = &k.key else {
            log.error(&format!(
                "Key {}/{} in the database does not parse",
                k.user, k.id
            ));
            return 1;
        };
        match target.trust(&k.user, key) {
            Ok(s) if s.written => {
                written += 1;
                log.log(
                    Level::Info,
                    &format!("Wrote '{}'", dir.join(&s.file).display()),
                );
            }
            Ok(_) => kept += 1,
            Err(e) => {
                log.error(&format!("Unable to export {}/{}: {e}", k.user, k.id));
                return 1;
            }
        }
    }
    log.log(
        Level::Notice,
        &format!(
            "Exported {written} keys to '{}' ({kept} already there)",
            dir.display()
        ),
    );
    0
}

/// Every trusted key file of the ppkeys directory `dir` into the database
/// (the host's own pair and unreadable files are left out). The files do
/// not say where a key was trusted from, so no address is recorded.
async fn import(log: &Log, store: &PgTrustStore, dir: &Path) -> u8 {
    if !dir.is_dir() {
        log.error(&format!("'{}' is not a directory", dir.display()));
        return 1;
    }
    let source = TrustStore::new(FsPpkeys::new(dir), DigestKind::Md5);
    let keys = match TrustBackend::list(&source).await {
        Ok(k) => k,
        Err(e) => {
            log.error(&format!("Unable to read '{}': {e}", dir.display()));
            return 1;
        }
    };
    let (mut added, mut kept, mut skipped) = (0usize, 0usize, 0usize);
    for k in &keys {
        let Some(key) = &k.key else {
            skipped += 1;
            log.log(
                Level::Warning,
                &format!("Skipping unreadable key {} for '{}'", k.id, k.user),
            );
            continue;
        };
        match store.trust(&k.user, key, None).await {
            Ok(true) => {
                added += 1;
                log.log(Level::Info, &format!("Imported {}/{}", k.user, k.id));
            }
            Ok(false) => kept += 1,
            Err(e) => {
                log.error(&format!("Unable to import {}/{}: {e}", k.user, k.id));
                return 1;
            }
        }
    }
    log.log(
        Level::Notice,
        &format!(
            "Imported {added} keys from '{}' ({kept} already trusted, {skipped} skipped)",
            dir.display()
        ),
    );
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn ctime_layout() {
        assert_eq!(rcf_core::civil::ctime_utc(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(
            rcf_core::civil::ctime_utc(1_765_000_000),
            "Sat Dec  6 05:46:40 2025"
        );
        assert_eq!(
            rcf_core::civil::ctime_utc(951_782_400),
            "Tue Feb 29 00:00:00 2000"
        );
    }
}
