//! rcf-serverd: a drop-in for CFEngine 3.21's cf-serverd.
//!
//! Flags follow cf-serverd's (`-f`, `-F`, `-K`, `-I`, `-v`, `-d`, `-g`, `-l`,
//! clustered as `-Kldf FILE`). Without `-F`, `-v` or `-d` it parses the
//! policy, binds, then forks: the parent exits 0 once the port listens, the
//! child detaches with its standard streams on /dev/null.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use rcf_core::policy::{self, LoadOptions, PolicySource, ServerPolicy};
use rcf_core::server::Level;
use rcf_core::tls::{Role, ServerTls, TlsClock, TlsSettings};
use rcf_fs::policy_source::FsPolicySource;
use rcf_fs::serve::ServerFs;
use rcf_tokio::{Logger, Shared};

mod check_config;
mod cluster;
mod explain;
mod logsink;
mod metrics;
mod reload;
mod sd;
mod show;

/// The policy served when there is no policy file: `WORKDIR/masterfiles`
/// (shortcut `masterfiles`) to loopback peers only.
const DEFAULT_POLICY: &str = r#"
body server control
{
      allowconnects => { "127.0.0.1", "::1" };
      trustkeysfrom => { "127.0.0.1", "::1" };
}

bundle server rcf_default_access
{
  access:
      "$(sys.workdir)/masterfiles/"
        admit_ips => { "127.0.0.1", "::1" },
        shortcut => "masterfiles";
}
"#;

#[derive(Parser, Debug)]
#[command(
    name = "rcf-serverd",
    version,
    about = "CFEngine 3.21 compatible server daemon (cf-serverd drop-in)",
    after_help = "Work directory: --workdir, else $CFENGINE_TEST_OVERRIDE_WORKDIR, else /var/lib/cfengine3.\n\
                  Policy: -f FILE, else WORKDIR/inputs/promises.cf, else a built-in policy serving\n\
                  WORKDIR/masterfiles (shortcut 'masterfiles') to loopback only."
)]
struct Cli {
    /// Policy file (relative names are taken from WORKDIR/inputs, as cf-serverd does).
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Stay in the foreground (for systemd and tests).
    #[arg(short = 'F', long = "no-fork")]
    no_fork: bool,
    /// Ignore locks (accepted for compatibility; rcf-serverd's locks are per port).
    #[arg(short = 'K', long = "no-lock")]
    no_lock: bool,
    /// Log at info level.
    #[arg(short = 'I', long = "inform")]
    inform: bool,
    /// Log at verbose level; implies --no-fork.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Log at debug level; implies --no-fork.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
    /// Log level: error, warning, notice, info, verbose, debug.
    #[arg(short = 'g', long = "log-level")]
    log_level: Option<String>,
    /// Prefix log lines with a timestamp.
    #[arg(short = 'l', long = "timestamp")]
    timestamp: bool,
    /// Define classes (comma-separated list; repeatable).
    #[arg(short = 'D', long = "define")]
    define: Vec<String>,
    /// Negate classes (as 3.21: applies to persistent classes only, which rcf-serverd has none of).
    #[arg(short = 'N', long = "negate")]
    negate: Vec<String>,
    /// Load and evaluate the policy, print warnings and the access summary, then exit.
    #[arg(long)]
    check_config: bool,
    /// Read def.json even when def_preferred.json exists next to the policy.
    #[arg(long)]
    ignore_preferred_augments: bool,
    /// Print the hard classes (and -D classes) matching REGEX, as `cf-promises --show-classes`, then exit.
    #[arg(long, value_name = "REGEX", num_args = 0..=1, default_missing_value = ".*")]
    show_classes: Option<String>,
    /// Print the sys variables matching REGEX, as `cf-promises --show-vars`, then exit.
    #[arg(long, value_name = "REGEX", num_args = 0..=1, default_missing_value = ".*")]
    show_vars: Option<String>,
    /// Work directory.
    #[arg(long)]
    workdir: Option<String>,
    /// Listening port (overrides `port` in body server control).
    #[arg(long)]
    port: Option<u16>,
    /// Bind address (overrides `bindtointerface`).
    #[arg(long = "bind")]
    bind: Option<String>,
    /// rcf extension: a daemonised server logs to this file instead of syslog (serverfacility).
    #[arg(long = "log-file")]
    log_file: Option<PathBuf>,
    /// rcf extension: seconds from accept to WELCOME before a peer is dropped (the real
    /// cf-agent needs milliseconds; a short deadline keeps idle connections from piling up).
    #[arg(long = "handshake-timeout", value_name = "SECS", default_value_t = 5)]
    handshake_timeout: u64,
    /// rcf extension: most connections from one address still before WELCOME, whatever
    /// allowallconnects says; past it the address's oldest such connection is dropped.
    #[arg(long = "preauth-per-address", value_name = "N", default_value_t = 32)]
    preauth_per_address: usize,
    /// rcf extension: most connections in all still before WELCOME, outside maxconnections
    /// (which counts identified sessions); past it the oldest of the busiest address is dropped.
    /// Default: a quarter of the open-files limit (RLIMIT_NOFILE, whose soft value is raised to
    /// the hard one at start), at least 256 and at most 4096.
    #[arg(long = "preauth-max", value_name = "N")]
    preauth_max: Option<usize>,
    /// rcf extension: seconds an identified peer may stay silent between requests (3.21: 600).
    #[arg(long = "idle-timeout", default_value_t = 600)]
    idle_timeout: u64,
    /// rcf extension: seconds one write may block before a peer that stopped reading is dropped.
    #[arg(long = "write-timeout", default_value_t = 60)]
    write_timeout: u64,
    /// rcf extension: seconds between checks for a newer validated policy or changed policy
    /// files (3.21 checks after each 10 s select() timeout); 0 disables (SIGHUP only).
    #[arg(long = "reload-interval", value_name = "SECS", default_value_t = reload::CHECK_INTERVAL_SECS)]
    reload_interval: u64,
    /// rcf extension: event-loop threads (default: one per CPU). Each accepts on its own
    /// SO_REUSEPORT socket and serves its connections start to end.
    #[arg(long = "threads", value_name = "N")]
    threads: Option<usize>,
    /// rcf extension: serve Prometheus metrics on http://ADDR/metrics (loopback addresses only; off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// rcf extension: trustkeysfrom closes itself after this many new keys were trusted (0: trust none).
    #[arg(long = "trust-max-new", value_name = "N")]
    trust_max_new: Option<u32>,
    /// rcf extension: trustkeysfrom closes itself this many seconds after the server started.
    #[arg(long = "trust-window", value_name = "SECS")]
    trust_window: Option<u64>,
    /// rcf extension (cluster): only these peers (the load balancers) may, and must, open with a
    /// PROXY header (v1 or v2, as HAProxy's send-proxy-v2); every decision then uses the client
    /// address it carries. Any other PROXY header is refused. Also $RCF_PROXY_FROM.
    #[arg(
        long = "proxy-from",
        value_name = "CIDR[,CIDR...]",
        env = "RCF_PROXY_FROM"
    )]
    proxy_from: Option<String>,
    /// rcf extension (cluster): trusted keys, revocations and lastseen in this PostgreSQL
    /// database (postgresql://...), shared by replicas (default: WORKDIR/ppkeys and
    /// state/cf_lastseen.lmdb). Also $RCF_TRUST_STORE.
    #[arg(long = "trust-store", value_name = "URL", env = "RCF_TRUST_STORE")]
    trust_store: Option<String>,
    /// rcf extension (cluster): create or upgrade the --trust-store schema, then exit.
    #[arg(long, requires = "trust_store")]
    migrate: bool,
    /// rcf extension: explain the access decision for one peer and request (a dry run), then exit:
    /// 0 allowed, 1 denied, 2 bad policy or arguments.
    #[arg(long, requires = "ip", help_heading = "Explain")]
    explain: bool,
    /// With --explain: the peer's IP address.
    #[arg(long, requires = "explain", help_heading = "Explain")]
    ip: Option<String>,
    /// With --explain: the peer's reverse-DNS name (default: unknown).
    #[arg(long, requires = "explain", help_heading = "Explain")]
    hostname: Option<String>,
    /// With --explain: the peer's key id (MD5=... or SHA=...).
    #[arg(long, requires = "explain", help_heading = "Explain")]
    key: Option<String>,
    /// With --explain: the IDENTITY username (default root).
    #[arg(long, requires = "explain", help_heading = "Explain")]
    user: Option<String>,
    /// With --explain: the peer speaks the classic (pre-TLS) protocol.
    #[arg(long, requires = "explain", help_heading = "Explain")]
    classic: bool,
    /// With --explain: a VAR request for this literal handle.
    #[arg(long, requires = "explain", group = "what", help_heading = "Explain")]
    literal: Option<String>,
    /// With --explain: a QUERY (or COOKIE: delta) for this name.
    #[arg(long, requires = "explain", group = "what", help_heading = "Explain")]
    query: Option<String>,
    /// With --explain: a CONTEXT request for this class name.
    #[arg(long, requires = "explain", group = "what", help_heading = "Explain")]
    context: Option<String>,
    /// With --explain: an EXEC -b for this bundle.
    #[arg(long, requires = "explain", group = "what", help_heading = "Explain")]
    bundle: Option<String>,
    /// With --explain: an EXEC -D for this class (roles:, admitted by --user).
    #[arg(long, requires = "explain", group = "what", help_heading = "Explain")]
    role: Option<String>,
    /// The policy FILE (overrides -f, as cf-serverd's FILE argument); with --explain: the
    /// path asked for (absolute, or through a shortcut).
    #[arg(group = "what", value_name = "FILE|PATH")]
    path: Option<String>,
    /// Activate internal diagnostics (accepted for compatibility; developers only).
    #[arg(short = 'x', long = "diagnostic")]
    diagnostic: bool,
    /// Set LD_LIBRARY_PATH for child processes (cfruncommand).
    #[arg(short = 'L', long = "ld-library-path", value_name = "PATH")]
    ld_library_path: Option<String>,
    /// Generate an avahi configuration file (refused: rcf-serverd does not announce itself).
    #[arg(short = 'A', long = "generate-avahi-conf")]
    generate_avahi_conf: bool,
    /// Colorized output: always, auto, never (accepted; rcf-serverd's log is not colored).
    #[arg(short = 'C', long = "color", value_name = "WHEN", num_args = 0..=1, default_missing_value = "auto")]
    color: Option<String>,
    /// On SIGHUP, stop gracefully instead of reloading: wait up to N seconds for open
    /// sessions to end, then exit (for systemd to start the new instance).
    #[arg(short = 't', long = "graceful-detach", value_name = "N")]
    graceful_detach: Option<u64>,
    /// Print the man page (roff) and exit.
    #[arg(long, hide = true)]
    man: bool,
}

fn level(cli: &Cli) -> Level {
    if let Some(g) = &cli.log_level {
        return match g.as_str() {
            "error" | "err" => Level::Error,
            "warning" | "warn" => Level::Warning,
            "notice" => Level::Notice,
            "info" | "inform" => Level::Info,
            "verbose" => Level::Verbose,
            _ => Level::Debug,
        };
    }
    rcf_cli::verbosity(cli.inform, cli.verbose, cli.debug)
}

/// Serves [`DEFAULT_POLICY`] under a virtual file name, everything else from disk.
struct DefaultSource;
const DEFAULT_NAME: &str = "/rcf-serverd/built-in/promises.cf";

impl PolicySource for DefaultSource {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path == DEFAULT_NAME {
            Ok(DEFAULT_POLICY.as_bytes().to_vec())
        } else {
            FsPolicySource.read(path)
        }
    }
    fn canonicalize(&self, path: &str) -> policy::Canon {
        FsPolicySource.canonicalize(path)
    }
    fn exists(&self, path: &str) -> bool {
        FsPolicySource.exists(path)
    }
    fn is_symlink(&self, path: &str) -> bool {
        FsPolicySource.is_symlink(path)
    }
}

/// The classes the command line adds (`-D`, `-N`, log level).
fn host_opts(cli: &Cli) -> check_config::HostOpts {
    let lvl = level(cli);
    check_config::HostOpts {
        define: cli.define.clone(),
        ignore_preferred_augments: cli.ignore_preferred_augments,
        verbose: lvl >= Level::Verbose,
        inform: lvl >= Level::Info,
        debug: lvl >= Level::Debug,
    }
}

/// Load the policy: the given or default file, else the built-in one.
fn load_policy(cli: &Cli, workdir: &str) -> (String, Result<ServerPolicy, policy::PolicyErrors>) {
    let file = check_config::resolve_file(cli.file.as_deref(), workdir);
    if cli.file.is_none() && !Path::new(&file).exists() {
        let opts: LoadOptions = check_config::load_options(DEFAULT_NAME, workdir, &host_opts(cli));
        return (DEFAULT_NAME.into(), policy::load(&DefaultSource, &opts));
    }
    // the same path as --check-config: augments (def.json), host-specific
    // data, and validation as cf-promises does it before cf-serverd loads
    let res = check_config::load_with(&FsPolicySource, &file, workdir, &host_opts(cli));
    (file, res)
}

/// The host key, checked as cf-serverd checks it at start: the work
/// directory must exist (a mistyped `--workdir` is refused, not created),
/// `localhost.priv` and `localhost.pub` must both be readable, parse and
/// belong together. Quick start: when the work directory exists and
/// `ppkeys/` holds neither file, a key pair is made. Each refusal is one
/// line naming the path.
fn host_key(workdir: &str, logger: &Logger) -> Result<rcf_core::keys::RsaPrivateKey, String> {
    let wd = Path::new(workdir);
    match std::fs::metadata(wd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("work directory '{workdir}' is not a directory")),
        Err(e) => {
            return Err(format!(
                "work directory '{workdir}' cannot be used ({e}); check --workdir or CFENGINE_TEST_OVERRIDE_WORKDIR"
            ))
        }
    }
    let ppkeys = wd.join("ppkeys");
    let priv_path = ppkeys.join("localhost.priv");
    let pub_path = ppkeys.join("localhost.pub");
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    if !exists(&priv_path) && !exists(&pub_path) {
        logger.log(
            Level::Notice,
            None,
            "Making a key pair for CFEngine, please wait, this could take a minute...",
        );
        let key = rcf_core::keys::generate(&mut rand_core::OsRng, rcf_core::keys::DEFAULT_BITS)
            .map_err(|e| e.to_string())?;
        rcf_fs::ppkeys::write_new_host_key(&ppkeys, &key).map_err(|e| e.to_string())?;
        return Ok(key);
    }
    let read = |p: &Path, which: &str| {
        std::fs::read(p).map_err(|e| format!("cannot read the {which} key '{}': {e}", p.display()))
    };
    let private = rcf_core::keys::parse_private_pem(&read(&priv_path, "private")?)
        .map_err(|e| format!("'{}' holds no usable private key: {e}", priv_path.display()))?;
    let public = rcf_core::keys::parse_public_pem(&read(&pub_path, "public")?)
        .map_err(|e| format!("'{}' holds no usable public key: {e}", pub_path.display()))?;
    if private.to_public_key() != public {
        return Err(format!(
            "public key '{}' does not belong to private key '{}'",
            pub_path.display(),
            priv_path.display()
        ));
    }
    Ok(private)
}

/// The files whose change triggers a reload: every policy file loaded,
/// the augments entries next to the policy and host-specific data.
fn watch_list(p: &ServerPolicy, file: &str, workdir: &str) -> Vec<String> {
    let mut v = p.files.clone();
    if let Some((dir, _)) = file.rsplit_once('/') {
        v.push(format!("{dir}/def.json"));
        v.push(format!("{dir}/def_preferred.json"));
    }
    v.push(format!("{workdir}/data/host_specific.json"));
    v
}

/// A stderr logger; `-l` prefixes cf-serverd's timestamps.
fn stderr_logger(lvl: Level, timestamps: bool) -> Logger {
    if timestamps {
        Logger::to(
            lvl,
            false,
            Box::new(logsink::Timestamped(std::io::stderr())),
        )
    } else {
        Logger::stderr(lvl, false)
    }
}

/// Whether the admin wrote the setting a TLS warning is about; warnings
/// about 3.21's built-in defaults (which rustls cannot offer in full) are
/// only worth a verbose line.
fn admin_wrote(setting: &str, c: &rcf_core::policy::ServerControl) -> bool {
    match setting {
        "allowciphers" => c.allowciphers.is_some(),
        "allowtlsversion" | "tls_min_version" => c.allowtlsversion.is_some(),
        _ => true,
    }
}

fn listen_backlog() -> i32 {
    std::env::var("CF_SERVERD_LISTEN_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| (1..=2048).contains(n))
        .unwrap_or(128)
}

/// Bind like `OpenReceiverChannel`: the given address, else the dual-stack
/// wildcard (IPv6 with V6ONLY cleared), falling back to IPv4 only. With
/// `shards` > 1, `shards` sockets per address share it through
/// `SO_REUSEPORT` (one per event-loop thread); returned per shard.
fn bind(addr: &str, port: u16, shards: usize) -> std::io::Result<Vec<Vec<std::net::TcpListener>>> {
    use socket2::{Domain, Socket, Type};
    // `listen` false: bind only. A bind already fails with EADDRINUSE on a
    // port someone listens on, and a socket that never listened cannot take
    // (and then reset) a peer's connection when it is dropped.
    let mk_as = |sa: SocketAddr,
                 dual: bool,
                 reuse_port: bool,
                 listen: bool|
     -> std::io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        // Inherited by accepted connections (Linux): one setsockopt
        // here instead of one per connection.
        s.set_tcp_nodelay(true)?;
        if reuse_port {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: a valid socket, an int option of the size passed.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_REUSEPORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if dual {
            s.set_only_v6(false)?;
        }
        s.bind(&sa.into())?;
        if listen {
            s.listen(listen_backlog())?;
        }
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    let mk = |sa, dual, reuse_port| mk_as(sa, dual, reuse_port, true);
    let group = |sa: SocketAddr, dual: bool| -> std::io::Result<Vec<std::net::TcpListener>> {
        if shards <= 1 {
            return Ok(vec![mk(sa, dual, false)?]);
        }
        // A plain bind first: a port already in use (cf-serverd, or another
        // rcf-serverd whose own sockets share SO_REUSEPORT) fails here as it
        // always did, instead of silently joining that server's group. It
        // never listens: it once did, and a peer connecting at start-up
        // could land in its backlog and be reset when it was dropped.
        drop(mk_as(sa, dual, false, false)?);
        (0..shards).map(|_| mk(sa, dual, true)).collect()
    };
    let one = if addr.is_empty() {
        match group(SocketAddr::from(([0u16; 8], port)), true) {
            Ok(l) => l,
            Err(_) => group(SocketAddr::from(([0u8; 4], port)), false)?,
        }
    } else {
        let ip: std::net::IpAddr = addr
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                (addr, port)
                    .to_socket_addrs()?
                    .next()
                    .map(|a| a.ip())
                    .ok_or_else(|| std::io::Error::other("no address"))
            })
            .map_err(|e: std::io::Error| {
                std::io::Error::other(format!("bindtointerface '{addr}': {e}"))
            })?;
        group(SocketAddr::new(ip, port), false)?
    };
    Ok(one.into_iter().map(|l| vec![l]).collect())
}

/// Raise the open-files soft limit to the hard one and return it (the
/// soft one if that fails). Why: Debian's soft default of 1024 is below
/// what `maxconnections` plus the pre-authentication budget may need, and
/// the hard limit is the admin's own bound (`LimitNOFILE`, limits.conf).
fn raise_nofile() -> libc::rlim_t {
    // SAFETY: getrlimit/setrlimit on a zeroed local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return l.rlim_max;
            }
        }
        l.rlim_cur
    }
}

/// The default pre-authentication budget in all for an open-files limit
/// of `nofile`: a quarter of it, between 256 and 4096. Why: a budget
/// smaller than a fleet's burst drops handshakes half done. 1,000 agents
/// connecting at once on one core against a budget of 256 lost 11,810
/// runs in 10 s and two thirds of the server's CPU (`rcf-bench compare
/// --scenario mpf --agents 1000 --pin`, session 7), and 0 with 1,024. A
/// budget larger than the descriptors left would let idle peers exhaust
/// those before it is ever full, and nothing would then be dropped for a
/// newcomer. About 11 KB of memory per pending connection was measured.
fn preauth_max_for(nofile: libc::rlim_t) -> usize {
    usize::try_from(nofile / 4)
        .unwrap_or(usize::MAX)
        .clamp(256, 4096)
}

/// Fork; the parent exits 0 (the port already listens), the child detaches.
fn daemonize() -> Result<(), String> {
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: called before any thread (tokio's runtime) exists.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 on valid descriptors; no Rust object owns 0..=2 here.
        if unsafe { libc::dup2(devnull.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `--explain`: load the policy as the server would, then explain.
fn run_explain(cli: &Cli) -> i32 {
    let workdir = check_config::resolve_workdir(cli.workdir.as_deref());
    let (file, loaded) = load_policy(cli, &workdir);
    let policy = match loaded {
        Ok(p) => p,
        Err(e) => {
            for d in &e.errors {
                eprintln!("rcf-serverd: error: {d}");
            }
            return 2;
        }
    };
    let ip = cli.ip.clone().unwrap_or_default();
    let key = cli.key.clone().unwrap_or_default();
    let user = cli.user.clone().unwrap_or_else(|| "root".into());
    let mut notes = Vec::new();
    let what = if let Some(n) = &cli.literal {
        explain::What::Literal(n.clone())
    } else if let Some(n) = &cli.query {
        explain::What::Query(n.clone())
    } else if let Some(n) = &cli.context {
        explain::What::Context(n.clone())
    } else if let Some(n) = &cli.bundle {
        explain::What::Bundle(n.clone())
    } else if let Some(n) = &cli.role {
        explain::What::Role(n.clone())
    } else if let Some(p) = &cli.path {
        let mut p = p.clone();
        if !p.starts_with('/') {
            match policy.expand_shortcut(&p, &ip, cli.hostname.as_deref(), &key) {
                Some(x) => {
                    notes.push(format!("shortcut: '{p}' expands to '{x}'"));
                    p = x;
                }
                None => {
                    println!("request: path '{p}'\nverdict: DENIED: relative path and no shortcut matches ('Relative paths are not allowed')");
                    return 1;
                }
            }
        }
        // The server checks the real path (symlinks resolved); directories
        // are checked with a trailing '/' (STAT, OPENDIR).
        match std::fs::canonicalize(&p) {
            Ok(real) => {
                let mut r = real.to_string_lossy().into_owned();
                if real.is_dir() && !r.ends_with('/') {
                    r.push('/');
                }
                if r != p {
                    notes.push(format!("real path: '{r}' (the server checks this)"));
                }
                p = r;
            }
            Err(e) => notes.push(format!("'{p}' cannot be resolved here ({e}); checking it as written (the server would refuse it: realpath fails)")),
        }
        explain::What::Path(p)
    } else {
        eprintln!("rcf-serverd: error: --explain needs a PATH, --literal, --query, --context, --bundle or --role");
        return 2;
    };
    let key_known = if key.is_empty() {
        None
    } else {
        Some(
            Path::new(&workdir)
                .join("ppkeys")
                .join(format!("{user}-{key}.pub"))
                .exists(),
        )
    };
    let ask = explain::Ask {
        ip,
        hostname: cli.hostname.clone(),
        key,
        user,
        classic: cli.classic,
        what,
        key_known,
    };
    let report = explain::explain(&policy, &ask);
    println!("policy: {file}");
    for n in notes {
        println!("{n}");
    }
    for l in &report.lines {
        println!("{l}");
    }
    if !report.consistent {
        3
    } else if report.allowed() {
        0
    } else {
        1
    }
}

fn main() {
    let mut cli = Cli::parse();
    if !cli.explain {
        // cf-serverd's FILE argument overrides -f
        if let Some(f) = cli.path.take() {
            cli.file = Some(f);
        }
    }
    if cli.generate_avahi_conf {
        eprintln!("rcf-serverd: error: --generate-avahi-conf is not supported (rcf-serverd does not announce itself over avahi)");
        std::process::exit(1);
    }
    if let Some(c) = &cli.color {
        if !matches!(c.as_str(), "always" | "auto" | "never") {
            eprintln!("rcf-serverd: error: --color must be always, auto or never, not '{c}'");
            std::process::exit(2);
        }
    }
    if let Some(p) = &cli.ld_library_path {
        // before any thread exists: children (cfruncommand) inherit it
        std::env::set_var("LD_LIBRARY_PATH", p);
    }
    let _ = cli.diagnostic;
    let _ = (&cli.no_lock, &cli.negate);
    if cli.man {
        std::process::exit(match rcf_cli::print_man_page(Cli::command()) {
            std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    if cli.explain {
        std::process::exit(run_explain(&cli));
    }
    if cli.show_classes.is_some() || cli.show_vars.is_some() {
        let workdir = check_config::resolve_workdir(cli.workdir.as_deref());
        let file = check_config::resolve_file(cli.file.as_deref(), &workdir);
        let (opts, aug, discovery) = check_config::prepare(&file, &workdir, &host_opts(&cli));
        for w in &discovery {
            eprintln!("rcf-serverd: warning: {w}");
        }
        for e in &aug.errors {
            eprintln!("rcf-serverd: error: {e}");
        }
        let defined: Vec<String> = cli
            .define
            .iter()
            .flat_map(|d| d.split(',').map(|c| c.trim().to_string()))
            .collect();
        let out = match (&cli.show_classes, &cli.show_vars) {
            (Some(re), _) => show::classes(&opts, &defined, &aug.classes, re),
            (None, Some(re)) => show::vars(&opts, re),
            (None, None) => Ok(Vec::new()),
        };
        match out {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("rcf-serverd: error: {e}");
                std::process::exit(2);
            }
        }
    }
    if cli.check_config {
        std::process::exit(check_config::run(
            cli.file.as_deref(),
            cli.workdir.as_deref(),
            &host_opts(&cli),
        ));
    }
    // The systemd unit sets both variables, empty when the mode is off.
    cli.trust_store = cli.trust_store.take().filter(|s| !s.trim().is_empty());
    if cli.migrate {
        let Some(url) = cli.trust_store.as_deref() else {
            eprintln!("rcf-serverd: error: --migrate needs --trust-store postgresql://...");
            std::process::exit(2);
        };
        std::process::exit(cluster::migrate(url));
    }
    let proxy_from = match cluster::proxy_policy(cli.proxy_from.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rcf-serverd: error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(Err(e)) = cli.trust_store.as_deref().map(cluster::check_url) {
        eprintln!("rcf-serverd: error: {e}");
        std::process::exit(2);
    }
    let workdir = check_config::resolve_workdir(cli.workdir.as_deref());
    let foreground = cli.no_fork || cli.verbose || cli.debug;
    let lvl = level(&cli);
    let startup_logger = stderr_logger(lvl, cli.timestamp);

    let (file, loaded) = load_policy(&cli, &workdir);
    let (file, policy) = match loaded {
        Ok(p) => (file, p),
        Err(e) => {
            for d in &e.errors {
                startup_logger.log(Level::Error, None, &d.to_string());
            }
            // as 3.21's SelectAndLoadPolicy: an invalid policy means
            // WORKDIR/inputs/failsafe.cf, with the class failsafe_fallback
            let failsafe = format!("{workdir}/inputs/failsafe.cf");
            if file == failsafe || !Path::new(&failsafe).is_file() {
                startup_logger.log(
                    Level::Error,
                    None,
                    &format!(
                        "Policy '{file}' is invalid and there is no '{failsafe}' to fall back to"
                    ),
                );
                std::process::exit(1);
            }
            startup_logger.log(
                Level::Error,
                None,
                &format!("Policy '{file}' is invalid, so going to failsafe"),
            );
            startup_logger.log(
                Level::Error,
                None,
                &format!("CFEngine failsafe.cf: {workdir}/inputs {failsafe}"),
            );
            let mut host = host_opts(&cli);
            host.define.push("failsafe_fallback".into());
            match check_config::load_with(&FsPolicySource, &failsafe, &workdir, &host) {
                Ok(p) => (failsafe, p),
                Err(e) => {
                    for d in &e.errors {
                        startup_logger.log(Level::Error, None, &d.to_string());
                    }
                    startup_logger.log(
                        Level::Error,
                        None,
                        &format!("The failsafe policy '{failsafe}' is invalid too"),
                    );
                    std::process::exit(1);
                }
            }
        }
    };
    let mut watched = watch_list(&policy, &file, &workdir);
    let entry = check_config::resolve_file(cli.file.as_deref(), &workdir);
    if !watched.contains(&entry) {
        // running failsafe (or the built-in policy): the real entry's
        // appearance or repair is a change too
        watched.push(entry);
    }
    // The files as they were when the policy was read: taken now, before
    // "Server is starting...", so an edit made right after the ready line
    // is seen by the first check instead of becoming the baseline.
    let initial_fingerprint = reload::fingerprint(
        &reload::validated_file(&workdir, cli.file.as_deref()),
        &watched,
    );
    for w in &policy.warnings {
        // The TLS settings below report TLS findings themselves, once.
        if !w.message.starts_with("Disabling TLS 1.3") {
            startup_logger.log(Level::Warning, None, &w.to_string());
        }
    }
    for l in policy.summary_lines() {
        startup_logger.log(Level::Verbose, None, &l);
    }
    let key = match host_key(&workdir, &startup_logger) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("rcf-serverd: error: {e}");
            std::process::exit(1);
        }
    };
    let (settings, warnings) = TlsSettings::from_cfengine(
        Role::Server,
        policy.control.allowciphers.as_deref(),
        policy.control.allowtlsversion.as_deref(),
    );
    // When nothing usable remains, say so in ONE warning naming the setting
    // (the details go to verbose); otherwise each finding is a warning.
    let unusable = settings.is_unusable();
    for w in &warnings {
        let is_summary = matches!(w.kind, rcf_core::tls::TlsWarningKind::Unusable(_));
        let lvl = if (unusable && !is_summary) || !admin_wrote(w.setting, &policy.control) {
            Level::Verbose
        } else {
            Level::Warning
        };
        startup_logger.log(lvl, None, &w.to_string());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let clock = TlsClock::new(now);
    let tls = match ServerTls::new(&key, &settings, &clock) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rcf-serverd: error: TLS setup failed: {e}");
            std::process::exit(1);
        }
    };
    let mut port = cli.port.unwrap_or(policy.control.port);
    let bind_addr = cli
        .bind
        .clone()
        .unwrap_or_else(|| policy.control.bindtointerface.clone());
    // Socket activation: systemd's sockets replace our own bind.
    let inherited = match sd::listen_fds() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rcf-serverd: error: Unable to start server: {e}");
            std::process::exit(1);
        }
    };
    let activated = !inherited.is_empty();
    let nofile = raise_nofile();
    let preauth_max = cli.preauth_max.unwrap_or_else(|| preauth_max_for(nofile));
    // One event loop per CPU unless told otherwise; systemd's sockets
    // (which cannot be multiplied) are served by one work-stealing runtime.
    let shards = match cli.threads {
        Some(0) | None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) => n.min(1024),
    };
    let listeners: Vec<Vec<std::net::TcpListener>> = if activated {
        if let Some(p) = inherited
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
        {
            port = p;
        }
        vec![inherited]
    } else {
        match bind(&bind_addr, port, shards) {
            Ok(l) => l,
            Err(e) => {
                let at = if bind_addr.is_empty() {
                    format!("[::]:{port} (and 0.0.0.0:{port})")
                } else if bind_addr.contains(':') {
                    format!("[{bind_addr}]:{port}")
                } else {
                    format!("{bind_addr}:{port}")
                };
                eprintln!("rcf-serverd: error: Unable to start server: cannot listen on {at}: {e}");
                std::process::exit(1);
            }
        }
    };
    let metrics_listener = match cli.metrics.map(metrics::bind_loopback).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rcf-serverd: error: {e}");
            std::process::exit(1);
        }
    };
    if !foreground {
        if let Err(e) = daemonize() {
            eprintln!("rcf-serverd: error: {e}");
            std::process::exit(1);
        }
    }
    let logger = Arc::new(if foreground {
        stderr_logger(lvl, cli.timestamp)
    } else if let Some(path) = cli.log_file.clone() {
        // rcf extension: an explicit log file, lines as on stderr
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")));
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Logger::to(lvl, false, Box::new(logsink::Timestamped(f))),
            Err(_) => Logger::to(
                lvl,
                false,
                Box::new(logsink::Syslog::open(logsink::facility(
                    &policy.control.serverfacility,
                ))),
            ),
        }
    } else {
        // as cf-serverd: a daemon logs to syslog with serverfacility
        Logger::to(
            lvl,
            false,
            Box::new(logsink::Syslog::open(logsink::facility(
                &policy.control.serverfacility,
            ))),
        )
    });
    // Pid files are per port so several servers can share a workdir.
    let pid_files: Vec<PathBuf> = {
        let mut v = vec![Path::new(&workdir).join(format!("cf-serverd-{port}.pid"))];
        if port == 5308 {
            v.push(Path::new(&workdir).join("cf-serverd.pid"));
        }
        v
    };
    for p in &pid_files {
        let _ = std::fs::write(p, format!("{}\n", std::process::id()));
    }
    // Start-up notices come before "Server is starting...", the line
    // operators and the lab take as "ready" (nothing is served before the
    // budget and the metrics below are in place either).
    if cli.trust_max_new.is_some() || cli.trust_window.is_some() {
        let n = cli
            .trust_max_new
            .map(|n| format!("{n} new key(s)"))
            .unwrap_or_else(|| "no key limit".into());
        let w = cli
            .trust_window
            .map(|w| format!("{w} s"))
            .unwrap_or_else(|| "no time limit".into());
        logger.log(Level::Notice, None, &format!("Trust on first use (trustkeysfrom) is budgeted: {n}, {w}; it closes by itself after that"));
    }
    if let Some(addr) = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        logger.log(
            Level::Notice,
            None,
            &format!("Serving metrics on http://{addr}/metrics"),
        );
    }
    logger.log(
        Level::Verbose,
        None,
        &format!(
            "Open files limit {nofile}; pre-authentication budget {preauth_max} in all, {} per address",
            cli.preauth_per_address
        ),
    );
    logger.log(
        Level::Notice,
        None,
        &format!("Server is starting... (policy '{file}', port {port})"),
    );
    if activated {
        logger.log(
            Level::Info,
            None,
            "Using the listening socket(s) passed by systemd (socket activation)",
        );
    }

    // Connections are served on the shard threads; this runtime keeps the
    // signals, reloads and metrics (and socket-activated listeners).
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if !activated {
        rt.worker_threads(1);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let fs = Arc::new(ServerFs::new(Path::new(&workdir).join("ppkeys")));
        let shared = Shared::with_timeouts(
            Arc::new(policy),
            tls,
            clock,
            fs,
            logger.clone(),
            rcf_core::server::Config {
                handshake_timeout_ms: cli.handshake_timeout * 1000,
                idle_timeout_ms: cli.idle_timeout * 1000,
                log_level: lvl,
            },
            std::time::Duration::from_secs(cli.write_timeout),
        );
        shared.set_pending_limits(rcf_core::server::admission::PendingLimits {
            per_address: cli.preauth_per_address,
            total: preauth_max,
        });
        if cli.trust_max_new.is_some() || cli.trust_window.is_some() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            shared
                .tofu
                .set_budget(rcf_core::server::tofu::TrustBudget::new(
                    cli.trust_max_new,
                    cli.trust_window,
                    now,
                ));
        }
        if let Err(e) =
            cluster::wire(&shared, proxy_from, cli.trust_store.as_deref(), &workdir, &logger).await
        {
            logger.log(Level::Error, None, &format!("Unable to start server: {e}"));
            std::process::exit(1);
        }
        let metrics_task = metrics_listener.map(|l| {
            let l = tokio::net::TcpListener::from_std(l).expect("metrics listener");
            tokio::spawn(metrics::serve_metrics(l, shared.clone()))
        });
        let (tl, shard_set): (Vec<tokio::net::TcpListener>, Option<rcf_tokio::Shards>) =
            if activated {
                (
                    listeners
                        .into_iter()
                        .flatten()
                        .map(|l| tokio::net::TcpListener::from_std(l).expect("listener"))
                        .collect(),
                    None,
                )
            } else {
                shared
                    .listeners_nodelay
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                match rcf_tokio::spawn_shards(listeners, shared.clone()) {
                    Ok(s) => (Vec::new(), Some(s)),
                    Err(e) => {
                        logger.log(
                            Level::Error,
                            None,
                            &format!("Unable to start server: event-loop threads: {e}"),
                        );
                        std::process::exit(1);
                    }
                }
            };
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let reload_shared = shared.clone();
        let reload_logger = logger.clone();
        let cli_file = cli.file.clone();
        let cli_define = cli.define.clone();
        let cli_ignore_pref = cli.ignore_preferred_augments;
        let cli_lvl = (cli.verbose, cli.inform, cli.debug, cli.log_level.clone());
        let wd = workdir.clone();
        let wd_for_watch = workdir.clone();
        let marker = reload::validated_file(&workdir, cli.file.as_deref());
        let interval = cli.reload_interval;
        let mut fp = initial_fingerprint;
        let graceful = cli.graceful_detach;
        let mut hup_graceful = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let open_shared = shared.clone();
        let grace_logger = logger.clone();
        let reloader = tokio::spawn(async move {
            loop {
                // SIGHUP, or (every `interval` s, as 3.21 after each
                // select() timeout) a newer validated marker or changed files
                let auto = tokio::select! {
                    h = hup.recv(), if graceful.is_none() => {
                        if h.is_none() {
                            break;
                        }
                        false
                    }
                    _ = tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))), if interval > 0 => {
                        let (m, files) = (marker.clone(), fp.files.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
                        let Ok(new) = tokio::task::spawn_blocking(move || reload::fingerprint(&m, &files)).await else {
                            continue;
                        };
                        match reload::reason(&fp, &new) {
                            None => continue,
                            Some(why) => {
                                reload_logger.log(Level::Verbose, None, why);
                                fp = new;
                                true
                            }
                        }
                    }
                };
                reload_logger.log(
                    if auto { Level::Notice } else { Level::Info },
                    None,
                    &format!("Rereading policy file '{file}'"),
                );
                let _ = sd::notify("RELOADING=1");
                let c = Cli {
                    file: cli_file.clone(),
                    define: cli_define.clone(),
                    ignore_preferred_augments: cli_ignore_pref,
                    verbose: cli_lvl.0,
                    inform: cli_lvl.1,
                    debug: cli_lvl.2,
                    log_level: cli_lvl.3.clone(),
                    ..Cli::parse_from(["rcf-serverd"])
                };
                let wd = wd.clone();
                match tokio::task::spawn_blocking(move || load_policy(&c, &wd)).await {
                    Ok((f, Ok(p))) => {
                        if !auto {
                            reload_logger.log(Level::Info, None, "New promises detected...");
                        }
                        let files = watch_list(&p, &f, &wd_for_watch);
                        reload_shared.set_policy(Arc::new(p));
                        reload_shared
                            .stats
                            .reloads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let m = marker.clone();
                        if let Ok(n) =
                            tokio::task::spawn_blocking(move || reload::fingerprint(&m, &files)).await
                        {
                            fp = n;
                        }
                    }
                    Ok((_, Err(e))) => {
                        reload_logger.log(
                            Level::Error,
                            None,
                            "File changes contain errors -- ignoring",
                        );
                        reload_shared
                            .stats
                            .reload_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        for d in &e.errors {
                            reload_logger.log(Level::Error, None, &d.to_string());
                        }
                    }
                    Err(_) => {}
                }
                let _ = sd::notify("READY=1");
            }
        });
        if let Err(e) = sd::notify(&format!("READY=1\nMAINPID={}", std::process::id())) {
            logger.log(
                Level::Warning,
                None,
                &format!("Cannot notify systemd (NOTIFY_SOCKET): {e}"),
            );
        }
        rcf_tokio::serve(tl, shared, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup_graceful.recv(), if graceful.is_some() => {
                    // -t N: a graceful stop instead of a reload
                    let n = graceful.unwrap_or(0);
                    grace_logger.log(Level::Info, None, "Doing a Graceful restart");
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(n);
                    while open_shared.stats.open.load(std::sync::atomic::Ordering::Relaxed) > 0
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .await;
        let _ = sd::notify("STOPPING=1");
        if let Some(s) = shard_set {
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
        }
        reloader.abort();
        if let Some(t) = metrics_task {
            t.abort();
        }
        logger.log(Level::Notice, None, "Server is stopping");
    });
    for p in &pid_files {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod man_page {
    use clap::CommandFactory;

    /// `dist/man/rcf-serverd.8` is what this CLI renders (`dist/gen-man.sh` regenerates it).
    #[test]
    fn committed_page_is_current() {
        rcf_cli::assert_man_page_current(
            super::Cli::command(),
            include_str!("../../../dist/man/rcf-serverd.8"),
        );
    }
}

#[cfg(test)]
mod preauth_default {
    /// The budget follows the descriptors the process may open, within
    /// bounds: Debian's default 1024 keeps the old 256, the systemd unit's
    /// 65536 gives 4096.
    #[test]
    fn a_quarter_of_nofile_within_bounds() {
        assert_eq!(super::preauth_max_for(0), 256);
        assert_eq!(super::preauth_max_for(1024), 256);
        assert_eq!(super::preauth_max_for(4096), 1024);
        assert_eq!(super::preauth_max_for(65536), 4096);
        assert_eq!(super::preauth_max_for(libc::rlim_t::MAX), 4096);
    }
}
