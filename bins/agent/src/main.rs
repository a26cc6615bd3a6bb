//! rcf-agent: the network half of cf-agent 3.21 (remote copy, bootstrap,
//! policy update) and cf-net's commands, over rcf-core's client role and
//! the rcf-smol runtime.
//!
//! Exit codes (see `--help`): 0 success; 1 something failed (a file was not
//! copied, bootstrap verification failed, a local error); 2 usage; 3 no
//! suitable server (none of the servers connected and authenticated); 5
//! `update` could not reach the hub and kept the last good inputs.
//!
//! Differences from cf-agent / cf-net 3.21 (deliberate or not yet done):
//! * Not a policy engine: `copy` takes `copy_from`, `depth_search` and
//!   `file_select` (`leaf_name`, `path_name`) attributes as flags. Live
//!   links on the server are copied as what they point to and dangling ones
//!   made again per `link_type`, as 3.21 does; no `copy_size`,
//!   `move_obstructions` (a wrong link or a file in the way of a link is a
//!   failure, as 3.21 without it); hard-linked source files stay hard
//!   linked (the first name in rcf's name order is copied, 3.21 takes the
//!   server's listing order);
//!   `copylink_patterns` on a dangling link is refused (3.21 acts on an
//!   uninitialised stat there); special files are reported and skipped.
//! * Every file goes to `<dest>.cfnew` (0600, O_EXCL) like cf-agent, and is
//!   also fsynced and its source re-STATed after the GET before the rename:
//!   one extra round trip per file, which catches a source that grew
//!   between STAT and GET (cf-agent would keep a short or desynchronised
//!   copy). A changed source is fetched again (3 attempts).
//! * STATs of a directory's entries are pipelined (one round trip per
//!   directory, batches of 128), and so are the MD5s of its files with
//!   `--compare digest` (or `atime`); cf-agent sends them one at a time.
//! * A recursive copy fetches files over up to `--parallel N` connections
//!   (default 4; extra ones only when more than a few files need a GET, and
//!   only if the server's `allowallconnects` admits them), like `cf-net get
//!   -j`; cf-agent uses one connection per server.
//! * `net` exits non-zero on failure (cf-net 3.21 exits 0), and `net get`
//!   writes through a temp file and rename.
//! * `bootstrap` writes no failsafe.cf, runs no policy, starts no cf-execd
//!   and cannot take the hub role (bootstrapping to one's own address) or
//!   use `:avahi`; `inputs/` is replaced by one rename of a fully pulled
//!   staging dir instead of being emptied first, and `policy_server.dat`
//!   is written only after a successful pull (cf-agent writes it first and
//!   removes it on failure). It generates the host key when missing
//!   (cf-agent leaves that to cf-key).
//! * No lastseen database is updated.
//! * `Authentication dialogue with '…' failed` is printed for any TLS,
//!   trust or identification failure (3.21 prints it for classic only).
//! * `--protocol classic` works for every command, `runagent` included
//!   (cf-serverd and rcf-serverd both serve EXEC over classic).
//! * TLS is rustls: TLS 1.3, or TLS 1.2 with ECDHE suites only; a
//!   cf-serverd whose `allowciphers` leaves only static-RSA TLS 1.2 suites
//!   cannot be reached, and a `--tls-ciphers` list of only static-RSA
//!   suites is refused (cf-agent would negotiate them).

mod bootstrap;
mod copy;
mod failover;
mod hub;
mod modules_presence;
mod mpf;
mod net;
mod output;
mod runagent;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rcf_core::banner::ProtocolVersion;
use rcf_core::client::Level;
use rcf_core::keys::DigestKind;
use rcf_core::tls::{TlsClock, TlsSettings};
use rcf_smol::ConnectOptions;

use output::Output;

/// Success.
/// cf-agent's `default_timeout`, seconds: copy, bootstrap and update use it
/// unless `-t` is given.
pub const AGENT_TIMEOUT: u64 = 10;

pub const EXIT_OK: u8 = 0;
/// A copy, bootstrap or local step failed.
pub const EXIT_FAILED: u8 = 1;
/// No server in the list could be connected to and authenticated.
pub const EXIT_NO_SERVER: u8 = 3;
/// `update`: the hub was unreachable; the last good inputs were kept.
pub const EXIT_KEPT_LAST_GOOD: u8 = 5;

/// CFEngine's port.
pub const DEFAULT_PORT: u16 = 5308;

const AFTER_HELP: &str = "\
Work directory: --workdir DIR, else $CFENGINE_TEST_OVERRIDE_WORKDIR, else
/var/lib/cfengine3 when running as root, else ~/.cfagent (home from the
password database), as rcf-key and cf-agent find it.

Exit codes: 0 ok; 1 failed (a file not copied, verification failed, local
error); 2 usage; 3 no suitable server (none connected and authenticated);
5 update could not reach the hub and kept the last good inputs.";

#[derive(Parser, Debug)]
#[command(name = "rcf-agent", version, about = "CFEngine 3.21-compatible remote copy, bootstrap and policy update", after_help = AFTER_HELP)]
struct Cli {
    /// Work directory (overrides CFENGINE_TEST_OVERRIDE_WORKDIR and the default).
    #[arg(long, global = true, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Print info-level messages (what was copied).
    #[arg(short = 'I', long = "inform", global = true)]
    inform: bool,
    /// Verbose output.
    #[arg(short = 'v', long = "verbose", global = true)]
    verbose: bool,
    /// Debug output.
    #[arg(short = 'd', long = "debug", global = true)]
    debug: bool,
    /// Machine-readable output: one JSON object on stdout, log lines on stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Copy a file or tree from a server (cf-agent copy_from semantics).
    Copy(CopyArgs),
    /// Bootstrap to a hub: trust its key, write policy_server.dat, pull masterfiles into inputs/.
    Bootstrap(BootstrapArgs),
    /// Pull masterfiles from the hub in policy_server.dat into inputs/.
    Update(UpdateArgs),
    /// cf-net equivalents: connect, stat, get, opendir.
    Net(NetArgs),
    /// cf-runagent equivalent: ask hosts to run their agent now (EXEC).
    Runagent(runagent::RunagentArgs),
}

/// Connection options shared by the commands.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Protocol: classic, 1, tls, 2, cookie, 3, latest.
    #[arg(long, default_value = "latest")]
    pub protocol: String,
    /// Connect and per-read timeout, seconds (copy_from timeout; cf-runagent's -t).
    /// Default: 10 for copy, bootstrap and update (cf-agent's), 30 for runagent.
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// TLS ciphers to offer, OpenSSL names separated by ':' (body common
    /// control tls_ciphers; `TLS_*` names are TLS 1.3 suites, a list
    /// without one turns TLS 1.3 off). Static-RSA suites such as
    /// AES256-GCM-SHA384 and AES256-SHA are unsupported by design: a list
    /// of only those is refused.
    #[arg(long = "tls-ciphers", value_name = "LIST")]
    pub tls_ciphers: Option<String>,
    /// Minimum TLS version: 1.0, 1.1, 1.2 or 1.3 (body common control
    /// tls_min_version; rustls starts at 1.2).
    #[arg(long = "tls-min-version", value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// Bind outgoing connections to this local address (body agent control
    /// bindtointerface); as in 3.21, a name that does not resolve fails the
    /// connection, an address that cannot be bound is logged and the
    /// connection made from any address.
    #[arg(long = "bind-to-interface", value_name = "ADDRESS")]
    pub bind_to_interface: Option<String>,
    /// Connect to the server's IPv4 addresses only (copy_from force_ipv4).
    #[arg(long = "force-ipv4")]
    pub force_ipv4: bool,
}

impl ConnArgs {
    /// Options with the defaults: latest protocol, no timeout given, no TLS settings.
    pub fn new(protocol: &str, timeout: Option<u64>) -> ConnArgs {
        ConnArgs {
            protocol: protocol.to_string(),
            timeout,
            tls_ciphers: None,
            tls_min_version: None,
            bind_to_interface: None,
            force_ipv4: false,
        }
    }
}

/// `--parallel`, shared by copy, bootstrap and update.
#[derive(Args, Debug, Clone)]
pub struct ParallelArgs {
    /// Fetch files over up to N connections to the server (like cf-net
    /// get -j). The directory walk stays on one connection; extra transfer
    /// connections open only when more than a few files need copying (one
    /// per 8 waiting), and a server that refuses a second connection (this
    /// host not in its allowallconnects) just gets one. 1 = one
    /// connection, every file fetched in walk order.
    #[arg(long, value_name = "N", default_value_t = copy::DEFAULT_PARALLEL, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
}

#[derive(Args, Debug, Clone)]
pub struct CopyArgs {
    /// Server `HOST[:PORT]`; repeat for failover (tried in order at connect time).
    #[arg(
        long = "server",
        short = 'H',
        required = true,
        value_name = "HOST[:PORT]"
    )]
    pub servers: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Trust an unknown server key and save it (copy_from trustkey).
    #[arg(long)]
    pub trustkey: bool,
    /// Accepted and ignored over TLS, as cf-agent ignores copy_from encrypt.
    #[arg(long)]
    pub encrypt: bool,
    /// When to copy over an existing file: mtime, ctime, atime, digest, hash, binary, exists.
    #[arg(long, default_value = "ctime", value_parser = ["mtime", "ctime", "atime", "digest", "hash", "binary", "exists"])]
    pub compare: String,
    /// After the transfer, ask the server to compare digests again.
    #[arg(long)]
    pub verify: bool,
    /// Copy a directory tree (depth_search).
    #[arg(long)]
    pub recurse: bool,
    /// depth_search exclude_dirs: a directory whose path or name fully matches is not copied (repeatable).
    #[arg(long = "exclude-dirs", value_name = "REGEX", requires = "recurse")]
    pub exclude_dirs: Vec<String>,
    /// depth_search include_dirs: only directories whose path or name fully matches are entered (repeatable).
    #[arg(long = "include-dirs", value_name = "REGEX", requires = "recurse")]
    pub include_dirs: Vec<String>,
    /// file_select leaf_name: only files whose name fully matches are copied (repeatable).
    #[arg(long = "leaf-name", value_name = "REGEX", requires = "recurse")]
    pub leaf_name: Vec<String>,
    /// file_select path_name: files whose whole source path fully matches set the path_name class (repeatable).
    #[arg(long = "path-name", value_name = "REGEX", requires = "recurse")]
    pub path_name: Vec<String>,
    /// file_select file_result: a class expression over leaf_name and path_name (`!`, `.`/`&`, `|`, parentheses). Default with --leaf-name alone: leaf_name.
    #[arg(long = "file-result", value_name = "EXPR")]
    pub file_result: Option<String>,
    /// link_type for a dangling source link or a linkcopy_patterns file: symlink, hardlink, relative, absolute.
    #[arg(long = "link-type", default_value = "symlink", value_parser = ["symlink", "hardlink", "relative", "absolute"])]
    pub link_type: String,
    /// linkcopy_patterns: files whose name matches are linked to the source instead of copied (repeatable).
    #[arg(long = "linkcopy-patterns", value_name = "REGEX")]
    pub linkcopy_patterns: Vec<String>,
    /// copylink_patterns (repeatable): a name matching both pattern lists is skipped; live links are always copied as files.
    #[arg(long = "copylink-patterns", value_name = "REGEX")]
    pub copylink_patterns: Vec<String>,
    /// check_root: with --preserve, also give the destination directory the source directory's mode (and owner, as root).
    #[arg(long = "check-root", requires = "recurse")]
    pub check_root: bool,
    /// depth_search xdev: do not copy nor enter entries on another device than the source.
    #[arg(long, requires = "recurse")]
    pub xdev: bool,
    /// depth_search include_basedir: accepted; as in cf-agent it acts only on perms/changes/rename/delete, not on a copy.
    #[arg(long = "include-basedir", requires = "recurse")]
    pub include_basedir: bool,
    /// depth_search rmdeadlinks: accepted; as in cf-agent a copy alone leaves dead links in the destination.
    #[arg(long, requires = "recurse")]
    pub rmdeadlinks: bool,
    /// force_update: copy even when the compare says the destination is up to date.
    #[arg(long = "force-update")]
    pub force_update: bool,
    /// collapse_destination_dir: copy every file of the tree into DEST itself (no subdirectories).
    #[arg(
        long = "collapse-destination-dir",
        requires = "recurse",
        conflicts_with = "purge"
    )]
    pub collapse_destination_dir: bool,
    /// stealth: give the copy the source's access and modification times.
    #[arg(long)]
    pub stealth: bool,
    /// copy_backup for a replaced file: true (<file>.cfsaved), false, timestamp.
    #[arg(long = "copy-backup", default_value = "true", value_parser = ["true", "false", "timestamp"])]
    pub copy_backup: String,
    /// default_repository: keep backups there (canonified full paths) instead of next to the file.
    #[arg(long = "default-repository", value_name = "DIR")]
    pub default_repository: Option<PathBuf>,
    /// With --recurse: how many directory levels to descend (default: all).
    #[arg(long, requires = "recurse")]
    pub depth: Option<u32>,
    /// With --recurse: delete local files the server does not list.
    #[arg(long, requires = "recurse")]
    pub purge: bool,
    /// Apply the source's permission bits (and owner, as root).
    #[arg(long)]
    pub preserve: bool,
    /// A source the server cannot stat is not an error.
    #[arg(long = "missing-ok")]
    pub missing_ok: bool,
    /// Fail when the destination exists with another file type.
    #[arg(long = "type-check")]
    pub type_check: bool,
    #[command(flatten)]
    pub par: ParallelArgs,
    /// Remote path (absolute, or a server shortcut such as `masterfiles`).
    pub source: String,
    /// Local destination.
    pub dest: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct BootstrapArgs {
    /// The hub, `HOST[:PORT]` (written to policy_server.dat exactly as
    /// given); several (`a b`, `a,b`) are tried in order, and all are
    /// written to policy_server.dat, one per line (cf-agent reads the first).
    #[arg(value_name = "HUB", required_unless_present = "hub_opt")]
    hub: Vec<String>,
    /// More hubs, as `-H a -H b` (after the positional ones).
    #[arg(short = 'H', long = "hub", value_name = "HOST[:PORT]")]
    hub_opt: Vec<String>,
    /// yes (default): trust the hub's key on first contact; no: it must already be trusted.
    #[arg(long = "trust-server", default_value = "yes", value_parser = ["yes", "no"], num_args = 0..=1, default_missing_value = "yes")]
    trust_server: String,
    /// Do not hand over to CFEngine afterwards (by default, when cf-agent is
    /// installed, its built-in failsafe.cf runs, as after `cf-agent --bootstrap`).
    #[arg(long)]
    no_failsafe: bool,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    par: ParallelArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct UpdateArgs {
    /// The hubs to update from, in order, with failover (`-H a -H b` or
    /// `-H a,b`); default: policy_server.dat, one hub per line (cf-agent
    /// reads only the first).
    #[arg(short = 'H', long = "hub", value_name = "HOST[:PORT]")]
    pub(crate) hub: Vec<String>,
    /// Mirror the whole `masterfiles` shortcut every run, unfiltered (no
    /// cf_promises_validated gate, no input_name_patterns, no validation):
    /// for hubs that do not serve the masterfiles policy framework.
    #[arg(long)]
    pub(crate) mirror: bool,
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) par: ParallelArgs,
}

/// `net`'s options, named and shaped as cf-net's (`-H`, `-t`, `-c`), with
/// rcf's own timeout and protocol choice on flags cf-net does not have.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Server hostnames or IPs, comma-separated (`HOST[:PORT],…`); defaults
    /// to the policy server (the first line of WORKDIR/policy_server.dat).
    /// As with cf-net, when -H is repeated only the last one is used.
    #[arg(short = 'H', long = "host", value_name = "HOSTS")]
    pub host: Vec<String>,
    /// Minimum TLS version to use: 1.0, 1.1, 1.2 or 1.3 (cf-net's
    /// --tls-version; rustls starts at 1.2).
    #[arg(short = 't', long = "tls-version", value_name = "VERSION")]
    pub tls_version: Option<String>,
    /// TLS ciphers to use, OpenSSL names separated by ':' as 3.21 splits
    /// them (cf-net's --ciphers; static-RSA suites are refused).
    #[arg(short = 'c', long = "ciphers", value_name = "LIST")]
    pub ciphers: Option<String>,
    /// Connect and per-read timeout, seconds (cf-net's is a fixed 30).
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = NET_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Protocol: classic, 1, tls, 2, cookie, 3, latest.
    #[arg(long, default_value = "latest")]
    pub protocol: String,
    #[command(subcommand)]
    pub what: NetCmd,
}

/// cf-net's connect timeout (`ServerConnection(…, 30, …)`), seconds.
pub const NET_TIMEOUT: u64 = 30;

#[derive(Subcommand, Debug, Clone)]
pub enum NetCmd {
    /// Connect and authenticate.
    Connect,
    /// Stat a remote path.
    Stat { path: String },
    /// Fetch a remote file (to `./BASENAME` or `-o FILE`).
    Get {
        path: String,
        /// Output file (cf-net's -o; `-` is refused as cf-net 3.21 refuses it).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Fetch N times at once, each over its own connection (cf-net's
        /// -j): `%d` in PATH and in the output name becomes 0..N-1; an
        /// output name without `%d` gets `.0`, `.1`, … appended.
        #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
    },
    /// List a remote directory.
    Opendir { path: String },
}

/// A server address from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// As written (the connection cache key; what messages show).
    pub text: String,
    /// Host part, without brackets.
    pub host: String,
    /// Port (default 5308).
    pub port: u16,
}

/// Split `host`, `host:port`, `[v6]:port` or a bare IPv6 address, as
/// CFEngine's `ParseHostPort` does.
/// The TCP port of service `name` (or one of its aliases) in an
/// `/etc/services` text.
fn service_port(services: &str, name: &str) -> Option<u16> {
    services.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let svc = f.next()?;
        let (port, proto) = f.next()?.split_once('/')?;
        let aliases: Vec<&str> = f.collect();
        (proto == "tcp" && (svc == name || aliases.contains(&name)))
            .then(|| port.parse().ok())
            .flatten()
    })
}

pub fn parse_host_port(s: &str) -> Result<ServerAddr, String> {
    let s = s.trim();
    let bad = || format!("bad server address '{s}'");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (host.to_string(), port)
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').expect("one colon");
        (h.to_string(), Some(p))
    } else {
        (s.to_string(), None)
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            Ok(_) => return Err(bad()),
            // A service name, as cf-agent accepts (`hub:cfengine`).
            Err(_) => std::fs::read_to_string("/etc/services")
                .ok()
                .and_then(|t| service_port(&t, p))
                .ok_or_else(|| format!("bad server address '{s}': unknown service '{p}'"))?,
        },
    };
    Ok(ServerAddr {
        text: s.to_string(),
        host,
        port,
    })
}

fn workdir(cli: &Cli) -> Result<PathBuf, String> {
    rcf_cli::workdir(cli.workdir.as_deref()).map_err(|e| e.to_string())
}

/// The local user name, as `GetCurrentUserName` gives it: the ppkeys
/// prefix of trusted server keys and the IDENTITY username.
fn local_user() -> String {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        return "root".into();
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    rcf_cli::passwd_field(&passwd, uid.as_raw(), 0).unwrap_or_else(|| uid.as_raw().to_string())
}

/// The wanted protocol version (classic included: every command speaks
/// it); `Err(2)` for a name 3.21 does not know.
fn protocol(conn: &ConnArgs, out: &Output) -> Result<ProtocolVersion, u8> {
    match ProtocolVersion::from_policy_name(&conn.protocol) {
        Some(v) => Ok(v),
        None => {
            out.log(
                Level::Error,
                &format!("Unknown protocol version '{}'", conn.protocol),
            );
            Err(2)
        }
    }
}

/// What a `--protocol classic` connection needs besides [`ConnectOptions`]
/// (`None` for TLS): our key, plain or encrypted requests, and
/// `WORKDIR/state`, where the server keys seen over classic are remembered.
pub fn classic_options(
    workdir: &Path,
    key: &rcf_core::keys::RsaPrivateKey,
    version: ProtocolVersion,
    encrypt: bool,
) -> Option<rcf_smol::ClassicOptions> {
    (version == ProtocolVersion::Classic).then(|| rcf_smol::ClassicOptions {
        key: Arc::new(key.clone()),
        encrypt,
        state_dir: workdir.join("state"),
    })
}

/// Load the host key, or make one when `generate` (bootstrap).
fn host_key(
    workdir: &Path,
    generate: bool,
    out: &Output,
) -> Result<rcf_core::keys::RsaPrivateKey, String> {
    let ppkeys = workdir.join("ppkeys");
    let priv_path = ppkeys.join("localhost.priv");
    if generate && !priv_path.exists() {
        out.log(
            Level::Notice,
            "Making a key pair for CFEngine, please wait, this could take a minute...",
        );
        let key = rcf_core::keys::generate(&mut rand_core::OsRng, rcf_core::keys::DEFAULT_BITS)
            .map_err(|e| e.to_string())?;
        rcf_fs::ppkeys::write_new_host_key(&ppkeys, &key).map_err(|e| e.to_string())?;
    }
    rcf_fs::ppkeys::load_host_key(workdir, DigestKind::Md5)
        .map(|k| k.private)
        .map_err(|e| e.to_string())
}

/// The outgoing TLS settings from `--tls-ciphers` / `--tls-min-version`
/// (cf-agent's `tls_ciphers` / `tls_min_version`, mapped onto rustls as
/// 3.21 maps them onto OpenSSL). Each name rcf cannot use is a warning; a
/// list that leaves nothing to negotiate is an error naming the
/// static-RSA suites it held, never a silent fallback to other suites.
pub fn tls_settings(conn: &ConnArgs, out: &Output) -> Result<TlsSettings, String> {
    use rcf_core::tls::{Role, TlsWarningKind};
    if conn.tls_ciphers.is_none() && conn.tls_min_version.is_none() {
        return Ok(TlsSettings::client_default());
    }
    let (settings, warnings) = TlsSettings::from_cfengine(
        Role::Client,
        conn.tls_ciphers.as_deref(),
        conn.tls_min_version.as_deref(),
    );
    let mut static_rsa = Vec::new();
    for w in &warnings {
        match &w.kind {
            TlsWarningKind::UnsupportedByDesign { name, why } if why.contains("static RSA") => {
                static_rsa.push(name.clone())
            }
            TlsWarningKind::Unusable(_) => continue,
            // What the list means rather than a problem with it.
            TlsWarningKind::Tls12Defaults | TlsWarningKind::Tls13Disabled => {
                out.log(Level::Verbose, &w.to_string());
                continue;
            }
            _ => {}
        }
        out.log(Level::Warning, &w.to_string());
    }
    match settings.unusable_reason() {
        None => Ok(settings),
        Some(why) if !static_rsa.is_empty() => Err(format!(
            "{why}: the static-RSA suite(s) {} are unsupported by design (rustls implements only ECDHE key exchange and TLS 1.3); name an ECDHE-RSA-* or TLS_* suite",
            static_rsa.join(", ")
        )),
        Some(why) => Err(format!("{why}; no TLS connection can be made")),
    }
}

/// Connection options for `server`, everything but the address filled in.
pub fn connect_options(
    workdir: &Path,
    key: &rcf_core::keys::RsaPrivateKey,
    conn: &ConnArgs,
    version: ProtocolVersion,
    trust_new: bool,
    out: &Output,
) -> Result<ConnectOptions, String> {
    let clock = TlsClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let settings = tls_settings(conn, out)?;
    let tls = rcf_core::tls::client_config(key, &settings, &clock).map_err(|e| e.to_string())?;
    let out2 = out.clone();
    Ok(ConnectOptions {
        host: String::new(),
        port: DEFAULT_PORT,
        version: Some(version),
        timeout: Duration::from_secs(conn.timeout.unwrap_or(30).max(1)),
        trust_new,
        ppkeys: workdir.join("ppkeys"),
        local_user: local_user(),
        tls,
        clock,
        log: Arc::new(move |l, m| out2.log(l, m)),
        bind_to: conn.bind_to_interface.clone(),
        force_ipv4: conn.force_ipv4,
    })
}

fn main() -> ExitCode {
    // Hidden, and read before clap (a subcommand is otherwise required).
    if std::env::args_os().nth(1).is_some_and(|a| a == "--man") {
        use clap::CommandFactory;
        return rcf_cli::print_man_page(Cli::command());
    }
    let cli = Cli::parse();
    let level = rcf_cli::verbosity(cli.inform, cli.verbose, cli.debug);
    let out = Output::new(level, cli.json);
    let wd = match workdir(&cli) {
        Ok(w) => w,
        Err(e) => {
            out.log(Level::Error, &e);
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match &cli.cmd {
        Cmd::Copy(a) => copy::run(&wd, a, &out),
        Cmd::Net(a) => net::run(&wd, a, &out),
        Cmd::Bootstrap(a) => bootstrap::bootstrap(
            &wd,
            &[a.hub.clone(), a.hub_opt.clone()].concat(),
            a.trust_server == "yes",
            &a.conn,
            a.par.parallel,
            !a.no_failsafe,
            &out,
        ),
        Cmd::Update(a) => bootstrap::update(&wd, a, &out),
        Cmd::Runagent(a) => runagent::run(&wd, a, &out),
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        let t = "# comment\ncfengine\t5308/tcp\nhttp 80/tcp www # web\nfoo 9/udp\n";
        assert_eq!(service_port(t, "cfengine"), Some(5308));
        assert_eq!(service_port(t, "www"), Some(80));
        assert_eq!(service_port(t, "foo"), None, "udp only");
        assert_eq!(service_port(t, "nope"), None);
    }

    #[test]
    fn host_port_forms() {
        let p = |s| parse_host_port(s).map(|a| (a.host, a.port));
        assert_eq!(p("hub"), Ok(("hub".into(), 5308)));
        assert_eq!(p("10.0.0.1:5309"), Ok(("10.0.0.1".into(), 5309)));
        assert_eq!(p("[::1]:99"), Ok(("::1".into(), 99)));
        assert_eq!(p("[::1]"), Ok(("::1".into(), 5308)));
        assert_eq!(p("2001:db8::1"), Ok(("2001:db8::1".into(), 5308)));
        assert!(
            p("hub:0").is_err() && p("hub:x").is_err() && p(":1").is_err() && p("[::1]x").is_err()
        );
    }

    #[test]
    fn tls_settings_refuse_static_rsa_only_lists_naming_them() {
        let out = Output::new(Level::Error, true);
        let conn = |c: Option<&str>, v: Option<&str>| ConnArgs {
            tls_ciphers: c.map(str::to_string),
            tls_min_version: v.map(str::to_string),
            ..ConnArgs::new("latest", None)
        };
        let e = tls_settings(&conn(Some("AES256-GCM-SHA384:AES256-SHA"), None), &out).unwrap_err();
        assert!(
            e.contains("AES256-GCM-SHA384, AES256-SHA are unsupported by design"),
            "{e}"
        );
        // With a usable suite beside it, a static-RSA name is only a warning.
        let s = tls_settings(&conn(Some("AES256-SHA:TLS_AES_256_GCM_SHA384"), None), &out).unwrap();
        assert_eq!(s.tls13_suites().len(), 1);
        // TLS 1.3 required with no TLS 1.3 suite: refused, not silently widened.
        assert!(tls_settings(
            &conn(Some("ECDHE-RSA-AES256-GCM-SHA384"), Some("1.3")),
            &out
        )
        .is_err());
        let s = tls_settings(&conn(None, Some("1.3")), &out).unwrap();
        assert_eq!(s.min_version(), rcf_core::tls::TlsVersion::Tls13);
        assert_eq!(
            tls_settings(&conn(None, None), &out).unwrap(),
            TlsSettings::client_default()
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// `dist/man/rcf-agent.8` is what this CLI renders (`dist/gen-man.sh` regenerates it).
    #[test]
    fn committed_man_page_is_current() {
        use clap::CommandFactory;
        rcf_cli::assert_man_page_current(
            Cli::command(),
            include_str!("../../../dist/man/rcf-agent.8"),
        );
    }
}
