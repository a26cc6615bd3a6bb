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
mod explain;
mod metrics;
mod sd;

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
    /// Define classes (accepted for compatibility).
    #[arg(short = 'D', long = "define")]
    define: Vec<String>,
    /// Negate classes (accepted for compatibility).
    #[arg(short = 'N', long = "negate")]
    negate: Vec<String>,
    /// Load and evaluate the policy, print warnings and the access summary, then exit.
    #[arg(long)]
    check_config: bool,
    /// Work directory.
    #[arg(long)]
    workdir: Option<String>,
    /// Listening port (overrides `port` in body server control).
    #[arg(long)]
    port: Option<u16>,
    /// Bind address (overrides `bindtointerface`).
    #[arg(long = "bind")]
    bind: Option<String>,
    /// Where a daemonised server logs (default WORKDIR/outputs/rcf-serverd-PORT.log).
    #[arg(long = "log-file")]
    log_file: Option<PathBuf>,
    /// rcf extension: seconds from accept to WELCOME before a peer is dropped.
    #[arg(long = "handshake-timeout", default_value_t = 30)]
    handshake_timeout: u64,
    /// rcf extension: seconds an identified peer may stay silent between requests (3.21: 600).
    #[arg(long = "idle-timeout", default_value_t = 600)]
    idle_timeout: u64,
    /// rcf extension: seconds one write may block before a peer that stopped reading is dropped.
    #[arg(long = "write-timeout", default_value_t = 60)]
    write_timeout: u64,
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
    /// With --explain: the path asked for (absolute, or through a shortcut).
    #[arg(requires = "explain", group = "what", value_name = "PATH")]
    path: Option<String>,
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
    if cli.debug {
        Level::Debug
    } else if cli.verbose {
        Level::Verbose
    } else if cli.inform {
        Level::Info
    } else {
        Level::Notice
    }
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

/// Load the policy: the given or default file, else the built-in one.
fn load_policy(cli: &Cli, workdir: &str) -> (String, Result<ServerPolicy, policy::PolicyErrors>) {
    let file = check_config::resolve_file(cli.file.as_deref(), workdir);
    if cli.file.is_none() && !Path::new(&file).exists() {
        let opts: LoadOptions = check_config::load_options(DEFAULT_NAME, workdir);
        return (DEFAULT_NAME.into(), policy::load(&DefaultSource, &opts));
    }
    let opts = check_config::load_options(&file, workdir);
    (file.clone(), policy::load(&FsPolicySource, &opts))
}

fn host_key(workdir: &str, logger: &Logger) -> Result<rcf_core::keys::RsaPrivateKey, String> {
    let ppkeys = Path::new(workdir).join("ppkeys");
    let priv_path = ppkeys.join("localhost.priv");
    match std::fs::read(&priv_path) {
        Ok(pem) => rcf_core::keys::parse_private_pem(&pem)
            .map_err(|e| format!("{}: {e}", priv_path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            logger.log(
                Level::Notice,
                None,
                "Making a key pair for CFEngine, please wait, this could take a minute...",
            );
            let key = rcf_core::keys::generate(&mut rand_core::OsRng, rcf_core::keys::DEFAULT_BITS)
                .map_err(|e| e.to_string())?;
            let pub_pem = rcf_core::keys::encode_public_pem(&key.to_public_key())
                .map_err(|e| e.to_string())?;
            let priv_pem = rcf_core::keys::encode_private_pem(&key).map_err(|e| e.to_string())?;
            rcf_fs::ppkeys::ensure_private_dir(&ppkeys).map_err(|e| e.to_string())?;
            rcf_fs::ppkeys::write_new_atomic(&priv_path, priv_pem.as_bytes(), 0o600)
                .map_err(|e| e.to_string())?;
            rcf_fs::ppkeys::write_new_atomic(
                &ppkeys.join("localhost.pub"),
                pub_pem.as_bytes(),
                0o600,
            )
            .map_err(|e| e.to_string())?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", priv_path.display())),
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
    let mk =
        |sa: SocketAddr, dual: bool, reuse_port: bool| -> std::io::Result<std::net::TcpListener> {
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
            s.listen(listen_backlog())?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        };
    let group = |sa: SocketAddr, dual: bool| -> std::io::Result<Vec<std::net::TcpListener>> {
        if shards <= 1 {
            return Ok(vec![mk(sa, dual, false)?]);
        }
        // A plain bind first: a port already in use (cf-serverd, or another
        // rcf-serverd whose own sockets share SO_REUSEPORT) fails here as it
        // always did, instead of silently joining that server's group.
        drop(mk(sa, dual, false)?);
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
    let cli = Cli::parse();
    let _ = (&cli.no_lock, &cli.define, &cli.negate);
    if cli.man {
        let mut out = std::io::stdout().lock();
        let code = match clap_mangen::Man::new(Cli::command())
            .section("8")
            .render(&mut out)
        {
            Ok(()) => 0,
            Err(_) => 1,
        };
        std::process::exit(code);
    }
    if cli.explain {
        std::process::exit(run_explain(&cli));
    }
    if cli.check_config {
        std::process::exit(check_config::run(
            cli.file.as_deref(),
            cli.workdir.as_deref(),
        ));
    }
    let workdir = check_config::resolve_workdir(cli.workdir.as_deref());
    let foreground = cli.no_fork || cli.verbose || cli.debug;
    let lvl = level(&cli);
    let startup_logger = Logger::stderr(lvl, cli.timestamp);

    let (file, loaded) = load_policy(&cli, &workdir);
    let policy = match loaded {
        Ok(p) => p,
        Err(e) => {
            for d in &e.errors {
                eprintln!("rcf-serverd: error: {d}");
            }
            std::process::exit(1);
        }
    };
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
            eprintln!("rcf-serverd: error: cannot load the host key: {e}");
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
        let lvl = if unusable && !is_summary {
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
                eprintln!("rcf-serverd: error: Unable to start server: {e}");
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
        Logger::stderr(lvl, cli.timestamp)
    } else {
        let path = cli.log_file.clone().unwrap_or_else(|| {
            Path::new(&workdir)
                .join("outputs")
                .join(format!("rcf-serverd-{port}.log"))
        });
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")));
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Logger::to(lvl, true, Box::new(f)),
            Err(_) => Logger::to(lvl, true, Box::new(std::io::sink())),
        }
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
        let wd = workdir.clone();
        let reloader = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                reload_logger.log(
                    Level::Info,
                    None,
                    &format!("Rereading policy file '{file}'"),
                );
                let _ = sd::notify("RELOADING=1");
                let c = Cli {
                    file: cli_file.clone(),
                    ..Cli::parse_from(["rcf-serverd"])
                };
                let wd = wd.clone();
                match tokio::task::spawn_blocking(move || load_policy(&c, &wd)).await {
                    Ok((_, Ok(p))) => {
                        reload_logger.log(Level::Info, None, "New promises detected...");
                        reload_shared.set_policy(Arc::new(p));
                        reload_shared
                            .stats
                            .reloads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
