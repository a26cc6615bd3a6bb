//! rcf-key: make and manage CFEngine host keys, compatible with cf-key 3.21.
//!
//! Same options, files, messages and exit codes as cf-key where it matters;
//! the differences are listed in `--help`.
//!
//! What cf-key 3.21 does that rcf-key does not:
//! * lastseen (`WORKDIR/state/cf_lastseen.lmdb`): `-s` lists it as cf-key
//!   does, with no host name lookups (Name is the address, as `cf-key -n`)
//!   and UTC times; `-t IP:FILE` records nothing there; `-r` has no
//!   coherence check, no exit 254, `-x` has no extra effect; "nothing
//!   found" exits 252/253. `--list-trusted` lists the ppkeys files.
//! * It creates the whole WORKDIR tree (inputs, outputs, state, bin, ...) and
//!   runs the generic agent start-up (classes, host discovery); rcf-key only
//!   creates WORKDIR and WORKDIR/ppkeys (0700).
//! * It accepts keys under 2048 bits (`-T 1024`, `-p`/`-t` of 1024-bit keys);
//!   rcf-key refuses them because cf-serverd 3.21 on OpenSSL 3 cannot use them.
//! * `-l` (Enterprise licence), `-M` (man page), `-C` colours and host name
//!   lookups are not implemented (`-C`, `-n` are accepted and ignored).
//! * `--timestamp` prints UTC (+0000); cf-key uses local time.
//! * randseed: cf-key writes OpenSSL's RAND_write_file output (1024 bytes);
//!   rcf-key writes 1024 bytes from the OS generator, mode 0600, atomically.
//!
//! Extensions: `-p` also accepts a private key file (plain or legacy
//! encrypted) and prints its id; `--workdir DIR`.

mod trust_store;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser};
use rand_core::{OsRng, RngCore};
use rcf_core::keys::ppkeys::{self, PPKEYS_DIR, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};
use rcf_core::keys::trust::{Entry, RemoveTarget, TrustError, TrustStore};
use rcf_core::keys::{
    encode_private_pem, encode_public_pem, generate, key_id, parse_private_pem, parse_public_pem,
    DigestKind, KeyError, RsaPublicKey, DEFAULT_BITS,
};
use rcf_core::server::Level;
use rcf_fs::ppkeys::{
    check_private_dir, ensure_private_dir, read_limited, write_new_atomic, write_replace_atomic,
    FsError, FsPpkeys,
};

/// Size of the entropy file cf-key writes.
const RANDSEED_LEN: usize = 1024;

const AFTER_HELP: &str = "\
Work directory: --workdir DIR, else $CFENGINE_TEST_OVERRIDE_WORKDIR, else
/var/lib/cfengine3 when running as root (Debian's location; upstream uses
/var/cfengine), else ~/.cfagent, with ~ taken from the password database like
cf-key does ($HOME only if the user is not in /etc/passwd). Keys are written to WORKDIR/ppkeys/
localhost.priv and localhost.pub (0600, directory 0700), plus WORKDIR/randseed.

Differences from cf-key 3.21: -s reads 3.21's own state/cf_lastseen.lmdb
(the same table; Name is the address, no lookups, as cf-key -n; times in
UTC). --list-trusted lists the trusted key files in ppkeys (user, key id,
and the address of old-style <user>-<ip>.pub files). -t USER@IP:FILE does
not record the address in lastseen; -r removes the lastseen entries of a key
id, an address or a host name's addresses, the keys found there and the
matching key files (no coherence check, -x has no extra effect), and exits
252/253 when nothing is found.
Keys under 2048 bits are refused (cf-serverd 3.21 on OpenSSL 3 cannot use
them). -p also accepts a private key file (plain or legacy-encrypted).";

#[derive(Parser, Debug)]
#[command(name = "rcf-key", version, about = "Make and manage CFEngine host keys (cf-key compatible)", after_help = AFTER_HELP)]
struct Cli {
    /// Work directory (overrides CFENGINE_TEST_OVERRIDE_WORKDIR and the default).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,

    /// Write the key pair to PATH.priv and PATH.pub instead of WORKDIR/ppkeys/localhost.*.
    #[arg(short = 'f', long = "output-file", value_name = "PATH")]
    output_file: Option<PathBuf>,

    /// RSA key size in bits (the long name is cf-key's).
    #[arg(short = 'T', long = "key-type", value_name = "BITS", default_value_t = DEFAULT_BITS)]
    key_type: usize,

    /// Print the key id of FILE (default WORKDIR/ppkeys/localhost.pub).
    #[arg(short = 'p', long = "print-digest", value_name = "FILE", num_args = 0..=1)]
    print_digest: Option<Option<PathBuf>>,

    /// List the peers in lastseen (WORKDIR/state/cf_lastseen.lmdb, as cf-key; the fleet's with --trust-store).
    #[arg(short = 's', long = "show-hosts")]
    show_hosts: bool,

    /// With -s: tab-separated, untruncated columns.
    #[arg(short = 'N', long = "no-truncate")]
    no_truncate: bool,

    /// Accepted for compatibility (no host name lookups are ever made).
    #[arg(short = 'n', long = "numeric")]
    numeric: bool,

    /// Trust the public key in FILE: [[USER@]IPADDR:]FILE, saved as USER-<keyid>.pub (USER default root).
    #[arg(short = 't', long = "trust-key", value_name = "[[USER@]IP:]FILE")]
    trust_key: Option<String>,

    /// Remove the trusted keys and lastseen entries of a key id (MD5=…, SHA=…), an address or a host name.
    #[arg(short = 'r', long = "remove-keys", value_name = "ID|IP|HOST")]
    remove_keys: Option<String>,

    /// Accepted for compatibility with -r (without lastseen there is nothing to force).
    #[arg(short = 'x', long = "force-removal")]
    force_removal: bool,

    /// Print basic information (log level info).
    #[arg(short = 'I', long = "inform")]
    inform: bool,

    /// Verbose output (log level verbose).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,

    /// Debug output (log level debug).
    #[arg(short = 'd', long = "debug")]
    debug: bool,

    /// Log level: error, warning, notice, info, verbose, debug.
    #[arg(short = 'g', long = "log-level", value_name = "LEVEL", value_parser = ["error", "warning", "notice", "info", "verbose", "debug"])]
    log_level: Option<String>,

    /// Log timestamps on each line of log output (always UTC, +0000).
    #[arg(long = "timestamp")]
    timestamp: bool,

    /// Print the man page (roff) and exit.
    #[arg(long, hide = true)]
    man: bool,

    /// Trust store for -s, -r, -t, --list-trusted, --export-ppkeys, --import-ppkeys: postgresql://… (default: WORKDIR/ppkeys).
    #[arg(long = "trust-store", value_name = "URL")]
    trust_store: Option<String>,

    /// List the trusted keys (the ppkeys files, or the --trust-store's keys).
    #[arg(long = "list-trusted")]
    list_trusted: bool,

    /// Write every trusted key of --trust-store into DIR as ppkeys files.
    #[arg(long = "export-ppkeys", value_name = "DIR", requires = "trust_store")]
    export_ppkeys: Option<PathBuf>,

    /// Trust every key file of the ppkeys directory DIR in --trust-store.
    #[arg(
        long = "import-ppkeys",
        value_name = "DIR",
        requires = "trust_store",
        conflicts_with = "export_ppkeys"
    )]
    import_ppkeys: Option<PathBuf>,

    /// Accepted for compatibility: output is never coloured.
    #[arg(short = 'C', long = "color", value_name = "WHEN", num_args = 0..=1, default_missing_value = "auto", action = ArgAction::Set)]
    color: Option<String>,
}

/// cf-key's log lines: level right-aligned in 8 columns, on stdout,
/// optionally preceded by an ISO 8601 timestamp (`--timestamp`).
struct Log {
    max: Level,
    timestamps: bool,
}

impl Log {
    fn log(&self, level: Level, msg: &str) {
        if level <= self.max {
            // One line per message, whatever a path or a peer put in it.
            let clean: String = msg
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            let mut out = std::io::stdout().lock();
            if self.timestamps {
                let _ = write!(out, "{} ", utc_timestamp(std::time::SystemTime::now()));
            }
            let _ = writeln!(out, "{:>8}: {}", level.as_str(), clean);
        }
    }
    fn error(&self, msg: &str) {
        self.log(Level::Error, msg)
    }
}

/// `2026-11-23T09:57:13+0000`, cf-key's `--timestamp` format, in UTC (cf-key
/// uses local time; on a UTC host they are identical).
fn utc_timestamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = rcf_core::civil::civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Resolve WORKDIR as documented in `--help` (shared with rcf-agent).
fn workdir(cli: &Cli) -> Result<PathBuf, String> {
    rcf_cli::workdir(cli.workdir.as_deref()).map_err(|e| e.to_string())
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s: OsString = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The OS error text the way cf-key shows it after `(fopen: ...)`.
fn os_reason(e: &FsError) -> String {
    match e {
        FsError::Io { source, .. } => {
            let s = source.to_string();
            // std appends " (os error N)"; strerror has no such suffix.
            match s.rfind(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.man {
        return rcf_cli::print_man_page(Cli::command());
    }
    let max = match cli.log_level.as_deref() {
        Some("error") => Level::Error,
        Some("warning") => Level::Warning,
        Some("info") => Level::Info,
        Some("verbose") => Level::Verbose,
        Some("debug") => Level::Debug,
        _ => rcf_cli::verbosity(cli.inform, cli.verbose, cli.debug),
    };
    let log = Log {
        max,
        timestamps: cli.timestamp,
    };
    let code = run(&cli, &log);
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

fn run(cli: &Cli, log: &Log) -> u8 {
    if let Some(code) = trust_store::dispatch(cli, log) {
        return code;
    }
    if cli.no_truncate && !(cli.show_hosts || cli.list_trusted) {
        // cf-key's message, verbatim (--list-trusted is rcf's own).
        log.error("--no-truncate / -N option is only for --show-hosts / -s");
        return 1;
    }
    let _ = (cli.numeric, cli.force_removal, &cli.color);
    let workdir = match workdir(cli) {
        Ok(w) => w,
        Err(e) => {
            log.error(&e);
            return 1;
        }
    };
    log.log(
        Level::Verbose,
        &format!("Work directory is {}", workdir.display()),
    );
    let ppkeys_dir = workdir.join(PPKEYS_DIR);
    if let Err(e) = check_private_dir(&ppkeys_dir) {
        log.error(&format!("Fatal CFEngine error: {e}"));
        return 1;
    }
    // cf-key's precedence when several actions are given.
    if cli.show_hosts {
        return show_lastseen(cli, log, &workdir);
    }
    if cli.list_trusted {
        return show_hosts(cli, log, &ppkeys_dir);
    }
    if let Some(file) = &cli.print_digest {
        let file = file
            .clone()
            .unwrap_or_else(|| ppkeys_dir.join(PUBLIC_KEY_FILE));
        return print_digest(log, &file);
    }
    if let Some(target) = &cli.remove_keys {
        return remove_keys(log, &workdir, &ppkeys_dir, target);
    }
    if let Some(arg) = &cli.trust_key {
        return trust_key(log, &ppkeys_dir, arg);
    }
    generate_pair(cli, log, &workdir, &ppkeys_dir)
}

/// Read a key file for -p / -t, with cf-key's open error.
fn read_key_file(log: &Log, path: &Path) -> Option<Vec<u8>> {
    match read_limited(path, rcf_core::keys::MAX_PEM_LEN) {
        Ok(b) => Some(b),
        Err(e @ FsError::TooLarge { .. }) => {
            log.error(&format!(
                "Error while reading public key '{}' ({e})",
                path.display()
            ));
            None
        }
        Err(e) => {
            log.error(&format!(
                "Cannot open public key file '{}' (fopen: {})",
                path.display(),
                os_reason(&e)
            ));
            None
        }
    }
}

/// A public key from a public key file; for -p, a private key file too.
fn load_public(log: &Log, path: &Path, allow_private: bool) -> Option<RsaPublicKey> {
    let bytes = read_key_file(log, path)?;
    let (what, result) = match parse_public_pem(&bytes) {
        Err(KeyError::WrongType { .. }) if allow_private && looks_private(&bytes) => (
            "private",
            parse_private_pem(&bytes).map(|k| k.to_public_key()),
        ),
        r => ("public", r),
    };
    match result {
        Ok(k) => Some(k),
        Err(e) => {
            log.error(&format!(
                "Error while reading {what} key '{}' ({e})",
                path.display()
            ));
            None
        }
    }
}

fn looks_private(bytes: &[u8]) -> bool {
    let has = |n: &[u8]| bytes.windows(n.len()).any(|w| w == n);
    has(b"-----BEGIN RSA PRIVATE KEY-----") || has(b"-----BEGIN PRIVATE KEY-----")
}

fn print_digest(log: &Log, file: &Path) -> u8 {
    match load_public(log, file, true) {
        Some(k) => {
            println!("{}", key_id(&k, DigestKind::Md5));
            0
        }
        None => 1,
    }
}

fn store(ppkeys_dir: &Path) -> TrustStore<FsPpkeys> {
    TrustStore::new(FsPpkeys::new(ppkeys_dir), DigestKind::Md5)
}

/// Split `[[USER@]IP:]FILE` at the rightmost `:` (IPv6 addresses keep theirs).
fn split_trust_arg(arg: &str) -> (String, Option<String>, String) {
    match arg.rsplit_once(':') {
        None => ("root".into(), None, arg.into()),
        Some((left, file)) => match left.split_once('@') {
            // cf-key 3.21 treats `USER@:FILE` as "no address" (it warns)
            // but `:FILE` as an empty address (it does not): observed live.
            Some((user, ip)) => (
                user.into(),
                Some(ip.to_string()).filter(|i| !i.is_empty()),
                file.into(),
            ),
            None => ("root".into(), Some(left.into()), file.into()),
        },
    }
}

fn trust_key(log: &Log, ppkeys_dir: &Path, arg: &str) -> u8 {
    let (user, ip, file) = split_trust_arg(arg);
    match &ip {
        None => log.log(
            Level::Notice,
            "Establishing trust might be incomplete. For completeness, use --trust-key IPADDR:filename",
        ),
        Some(ip) => log.log(
            Level::Verbose,
            &format!("No lastseen database: the address '{ip}' is not recorded"),
        ),
    }
    if let Err(e) = ppkeys::check_user(&user) {
        log.error(&format!("Cannot trust key '{file}': {e}"));
        return 1;
    }
    let Some(key) = load_public(log, Path::new(&file), false) else {
        return 1;
    };
    match store(ppkeys_dir).trust(&user, &key) {
        Ok(saved) => {
            let path = ppkeys_dir.join(&saved.file);
            if saved.written {
                log.log(
                    Level::Verbose,
                    &format!("Saving public key to file '{}'", path.display()),
                );
            } else {
                log.log(
                    Level::Verbose,
                    &format!(
                        "Public key file '{}' already exists, not rewriting",
                        path.display()
                    ),
                );
            }
            0
        }
        Err(e) => {
            log.error(&format!("Unable to trust the key in '{file}': {e}"));
            1
        }
    }
}

/// What `-r TARGET` designates: a key id, an address, or a host name
/// (resolved to its addresses, as 3.21's `RemoveKeys` resolves one with
/// `Hostname2IPString`; a name that does not resolve is taken literally).
/// Exit code 255 with cf-key's message for a malformed key id.
pub(crate) fn remove_targets(log: &Log, target: &str) -> Result<Vec<RemoveTarget>, u8> {
    let parsed = target.parse::<RemoveTarget>().map_err(|e| {
        log.error(&e.to_string());
        255u8
    })?;
    if let RemoveTarget::Address(a) = &parsed {
        if a.parse::<std::net::IpAddr>().is_err() {
            use std::net::ToSocketAddrs;
            let mut addrs: Vec<String> = (a.as_str(), 0)
                .to_socket_addrs()
                .map(|it| it.map(|s| s.ip().to_string()).collect())
                .unwrap_or_default();
            addrs.sort();
            addrs.dedup();
            if !addrs.is_empty() {
                log.log(
                    Level::Verbose,
                    &format!("Host '{a}' resolves to {}", addrs.join(", ")),
                );
                return Ok(addrs.into_iter().map(RemoveTarget::Address).collect());
            }
        }
    }
    Ok(vec![parsed])
}

/// `-r` on a single node: the lastseen entries of the key or address (when
/// `state/cf_lastseen.lmdb` exists; the keys found there for an address
/// are removed from ppkeys too, as cf-key does), then the matching ppkeys
/// files. 252/253 when nothing was found for a key id / an address.
fn remove_keys(log: &Log, workdir: &Path, ppkeys_dir: &Path, target: &str) -> u8 {
    let targets = match remove_targets(log, target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let db = workdir.join(rcf_fs::lastseen::LASTSEEN_FILE);
    let lastseen = if db.exists() {
        match rcf_fs::lastseen::LmdbLastseen::open(workdir) {
            Ok(l) => Some(l),
            Err(e) => {
                log.error(&format!("Unable to open lastseen database: {e}"));
                return 255;
            }
        }
    } else {
        None
    };
    let mut found_any = false;
    let mut targets_all = targets.clone();
    for t in &targets {
        let Some(l) = &lastseen else { break };
        let forgotten = match t {
            RemoveTarget::Key(k) => l.forget(Some(k), None),
            RemoveTarget::Address(a) => l.forget(None, Some(a)),
        };
        match forgotten {
            Ok(keys) if !keys.is_empty() => {
                found_any = true;
                log.log(
                    Level::Info,
                    "Removed corresponding entries from lastseen database.",
                );
                for k in keys {
                    if !targets_all.contains(&RemoveTarget::Key(k.clone())) {
                        targets_all.push(RemoveTarget::Key(k));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                log.error(&format!(
                    "Unable to remove host from lastseen database: {e}"
                ));
                return 255;
            }
        }
    }
    for t in &targets_all {
        match store(ppkeys_dir).remove(t) {
            Ok(removed) => {
                for f in removed {
                    found_any = true;
                    log.log(
                        Level::Info,
                        &format!("Removed key file '{}'", ppkeys_dir.join(f).display()),
                    );
                }
            }
            Err(e) => {
                log.error(&format!("Unable to remove keys for '{target}': {e}"));
                return 255;
            }
        }
    }
    if found_any {
        return 0;
    }
    none_found(log, &targets, target, "key file")
}

/// The end of a removal (`-r`, and the PostgreSQL store's revoke) that
/// found nothing to remove: logs cf-key's "No trusted `noun` found for
/// digest|host 'target'" and returns its exit code, 252 when the first
/// target is a key digest, 253 for a host (as 3.21's cf-key does).
pub(crate) fn none_found(log: &Log, targets: &[RemoveTarget], target: &str, noun: &str) -> u8 {
    let (what, code) = match targets.first() {
        Some(RemoveTarget::Key(_)) => ("digest", 252),
        _ => ("host", 253),
    };
    log.error(&format!("No trusted {noun} found for {what} '{target}'"));
    code
}

/// One `cf-key -s` row: direction, address, last time, key id.
pub(crate) struct SeenRow {
    pub(crate) direction: rcf_core::lastseen::Direction,
    pub(crate) address: String,
    pub(crate) lastseen: i64,
    pub(crate) key: String,
}

/// cf-key 3.21's `-s` table (`ShowLastSeenHosts`): same header, columns,
/// widths and `Total Entries` line; Name is the address (no lookups, as
/// `cf-key -n`) and the time is UTC (cf-key prints local time).
pub(crate) fn print_lastseen(cli: &Cli, rows: &[SeenRow]) -> u8 {
    let mut out = std::io::stdout().lock();
    let mut row = |d: &str, ip: &str, name: &str, when: &str, key: &str| {
        if cli.no_truncate {
            writeln!(out, "{d}\t{ip}\t{name}\t{when}\t{key}")
        } else {
            writeln!(
                out,
                "{d:<10.10} {ip:<40.40} {name:<25.25} {when:<26.26} {key}"
            )
        }
        .is_ok()
    };
    let mut ok = row("Direction", "IP", "Name", "Last connection", "Key");
    for e in rows {
        ok &= row(
            e.direction.name(),
            &e.address,
            &e.address,
            &rcf_core::civil::ctime_utc(e.lastseen),
            &e.key,
        );
    }
    ok &= writeln!(out, "Total Entries: {}", rows.len()).is_ok();
    u8::from(!ok)
}

/// `-s` on a single node: 3.21's own `state/cf_lastseen.lmdb` (made when
/// missing, as cf-key does), in the file's order.
fn show_lastseen(cli: &Cli, log: &Log, workdir: &Path) -> u8 {
    let rows = match rcf_fs::lastseen::LmdbLastseen::open(workdir).and_then(|l| l.entries()) {
        Ok(r) => r,
        Err(e) => {
            log.error(&format!("Unable to show lastseen database: {e}"));
            return 1;
        }
    };
    let rows: Vec<SeenRow> = rows
        .into_iter()
        .map(|r| SeenRow {
            direction: r.direction,
            address: r.address,
            lastseen: r.quality.lastseen,
            key: r.key.to_string(),
        })
        .collect();
    print_lastseen(cli, &rows)
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the Unix epoch, in UTC.
fn utc_text(secs: u64) -> String {
    let (y, m, d) = rcf_core::civil::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn show_hosts(cli: &Cli, log: &Log, ppkeys_dir: &Path) -> u8 {
    let entries: Vec<Entry> = match store(ppkeys_dir).list() {
        Ok(e) => e,
        Err(TrustError::Store(e)) => {
            log.error(&format!("Unable to list trusted keys: {e}"));
            return 1;
        }
        Err(e) => {
            log.error(&format!("Unable to list trusted keys: {e}"));
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    // The tab-separated form (-N) keeps its three columns for scripts; the
    // table adds when each key was trusted (the file's mtime, UTC).
    let row = |out: &mut std::io::StdoutLock, user: &str, ip: &str, key: &str, when: &str| {
        let user = if user.is_empty() { "(none)" } else { user };
        if cli.no_truncate {
            writeln!(out, "{user}\t{ip}\t{key}")
        } else {
            writeln!(out, "{:<20.20} {:<40.40} {:<36} {}", user, ip, key, when)
        }
    };
    let mut ok = row(&mut out, "User", "IP", "Key", "Trusted (UTC)").is_ok();
    for e in &entries {
        let key =
            e.id.as_ref()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into());
        let when = std::fs::metadata(ppkeys_dir.join(&e.file))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| utc_text(d.as_secs()))
            .unwrap_or_else(|| "-".into());
        ok &= row(
            &mut out,
            &e.user,
            e.ip.as_deref().unwrap_or("-"),
            &key,
            &when,
        )
        .is_ok();
    }
    ok &= writeln!(out, "Total Entries: {}", entries.len()).is_ok();
    if ok {
        0
    } else {
        1
    }
}

fn generate_pair(cli: &Cli, log: &Log, workdir: &Path, ppkeys_dir: &Path) -> u8 {
    let (priv_path, pub_path) = match &cli.output_file {
        Some(base) => (with_ext(base, "priv"), with_ext(base, "pub")),
        None => (
            ppkeys_dir.join(PRIVATE_KEY_FILE),
            ppkeys_dir.join(PUBLIC_KEY_FILE),
        ),
    };
    for p in [&pub_path, &priv_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            log.error(&format!("A key file already exists at {}", p.display()));
            return 1;
        }
    }
    log.log(
        Level::Info,
        "Making a key pair for CFEngine, please wait, this could take a minute...",
    );
    let key = match generate(&mut OsRng, cli.key_type) {
        Ok(k) => k,
        Err(e) => {
            log.error(&format!("Unable to generate cryptographic key ({e})"));
            return 1;
        }
    };
    let (priv_pem, pub_pem) = match (
        encode_private_pem(&key),
        encode_public_pem(&key.to_public_key()),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            log.error(&format!("Unable to encode the key pair ({e})"));
            return 1;
        }
    };
    if cli.output_file.is_none() {
        if let Err(e) = ensure_private_dir(ppkeys_dir) {
            log.error(&format!("Unable to create the key directory ({e})"));
            return 1;
        }
    }
    log.log(
        Level::Verbose,
        &format!("Writing private key to '{}'", priv_path.display()),
    );
    match write_new_atomic(&priv_path, priv_pem.as_bytes(), 0o600) {
        Ok(true) => {}
        Ok(false) => {
            log.error(&format!(
                "A key file already exists at {}",
                priv_path.display()
            ));
            return 1;
        }
        Err(e) => {
            log.error(&format!(
                "Error while writing private key file '{}' (fopen: {})",
                priv_path.display(),
                os_reason(&e)
            ));
            return 1;
        }
    }
    log.log(
        Level::Verbose,
        &format!("Writing public key to file '{}'", pub_path.display()),
    );
    let pub_result = write_new_atomic(&pub_path, pub_pem.as_bytes(), 0o600);
    if !matches!(pub_result, Ok(true)) {
        // Never leave half a pair behind.
        let _ = std::fs::remove_file(&priv_path);
        match pub_result {
            Ok(_) => log.error(&format!(
                "A key file already exists at {}",
                pub_path.display()
            )),
            Err(e) => log.error(&format!(
                "Error while writing public key file '{}' (fopen: {})",
                pub_path.display(),
                os_reason(&e)
            )),
        }
        return 1;
    }
    let seed_path = workdir.join("randseed");
    log.log(
        Level::Verbose,
        &format!("Using '{}' for randseed", seed_path.display()),
    );
    let mut seed = vec![0u8; RANDSEED_LEN];
    OsRng.fill_bytes(&mut seed);
    if let Err(e) =
        ensure_private_dir(workdir).and_then(|_| write_replace_atomic(&seed_path, &seed, 0o600))
    {
        log.error(&format!(
            "Could not write randseed file '{}' ({e})",
            seed_path.display()
        ));
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dist/man/rcf-key.8` is what this CLI renders (`dist/gen-man.sh` regenerates it).
    #[test]
    fn committed_man_page_is_current() {
        rcf_cli::assert_man_page_current(
            Cli::command(),
            include_str!("../../../dist/man/rcf-key.8"),
        );
    }

    #[test]
    fn trust_arg_splits_at_the_rightmost_colon() {
        assert_eq!(
            split_trust_arg("k.pub"),
            ("root".into(), None, "k.pub".into())
        );
        assert_eq!(
            split_trust_arg("10.0.0.1:k.pub"),
            ("root".into(), Some("10.0.0.1".into()), "k.pub".into())
        );
        assert_eq!(
            split_trust_arg("bob@::1:k.pub"),
            ("bob".into(), Some("::1".into()), "k.pub".into())
        );
        assert_eq!(
            split_trust_arg("@1.2.3.4:/a/k.pub"),
            ("".into(), Some("1.2.3.4".into()), "/a/k.pub".into())
        );
        assert_eq!(
            split_trust_arg("bob@:k.pub"),
            ("bob".into(), None, "k.pub".into())
        );
        assert_eq!(
            split_trust_arg(":k.pub"),
            ("root".into(), Some("".into()), "k.pub".into())
        );
    }

    #[test]
    fn timestamps_are_iso8601_utc() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00+0000");
        // 2026-11-23T09:57:13Z, as printed by cf-key --timestamp on this host.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_427_833);
        assert_eq!(utc_timestamp(t), "2026-11-23T09:57:13+0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00+0000");
    }

    #[test]
    fn home_from_passwd() {
        let pw = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbad line\n";
        let home = |uid| rcf_cli::passwd_field(pw, uid, 5);
        assert_eq!(home(65534).as_deref(), Some("/nonexistent"));
        assert_eq!(home(0).as_deref(), Some("/root"));
        assert_eq!(home(1000), None);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["rcf-key", "-p"]).unwrap();
        assert_eq!(c.print_digest, Some(None));
        let c = Cli::try_parse_from(["rcf-key", "-p", "x.pub"]).unwrap();
        assert_eq!(c.print_digest, Some(Some(PathBuf::from("x.pub"))));
        assert_eq!(Cli::try_parse_from(["rcf-key"]).unwrap().key_type, 2048);
    }
}

#[cfg(test)]
mod when_tests {
    #[test]
    fn utc_text_is_civil_time() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc_text(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc_text(1_795_000_000), "2026-11-18 11:06:40");
    }
}
