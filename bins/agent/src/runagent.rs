//! `rcf-agent runagent`: cf-runagent's interface (SEMANTICS.md G). Asks each
//! host's cf-serverd (or rcf-serverd) to run its agent now, prints the
//! output prefixed per host, and exits with the remote result.
//!
//! Exit status: one host, its remote exit code (255 when it did not run or
//! reported none); several hosts, the number that failed, capped at 100.
//! Unlike cf-runagent 3.21, `-b` does not count successful hosts as failed.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcf_core::client::Level;
use rcf_smol::{Conn, Error};

use crate::output::Output;
use crate::ConnArgs;

/// The `runagent` arguments, named and shaped as cf-runagent's.
#[derive(clap::Args, Debug, Clone)]
pub struct RunagentArgs {
    /// Hosts to hail: `host`, `host:port` or `[v6]:port`, comma-separated; repeatable.
    #[arg(short = 'H', long = "hail", required = true, value_name = "HOSTS")]
    pub hail: Vec<String>,
    /// Classes for the remote agent (`-D a,b`); repeats are joined with `,`.
    #[arg(short = 'D', long = "define-class", value_name = "CLASSES")]
    pub define: Vec<String>,
    /// Remote bundle sequence; repeats are joined with `,`.
    #[arg(long = "remote-bundles", value_name = "BUNDLES")]
    pub bundles: Vec<String>,
    /// Run only where one of these classes is defined on the server (split on `,`, `:` or space).
    #[arg(short = 's', long = "select-class", value_name = "CLASSES")]
    pub select: Vec<String>,
    /// Hail hosts in parallel, at most N at a time (default 50).
    #[arg(short = 'b', long = "background", value_name = "N", num_args = 0..=1, default_missing_value = "50")]
    pub background: Option<usize>,
    /// Ask before trusting an unknown server key.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Removed in CFEngine: refused, as cf-runagent refuses it.
    #[arg(
        short = 'o',
        long = "remote-options",
        value_name = "OPTIONS",
        hide = true
    )]
    pub remote_options: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// cf-runagent's exit codes for its own usage errors.
const EXIT_DEPRECATED: u8 = 1;
const EXIT_BAD_COMBINATION: u8 = 101;

/// Run cf-runagent's job; returns the exit status.
pub fn run(workdir: &Path, a: &RunagentArgs, out: &Output) -> u8 {
    if a.remote_options.is_some() {
        out.say("Option \"-o\" has been deprecated, you can not pass arbitrary arguments to remote cf-agent");
        return EXIT_DEPRECATED;
    }
    if a.background.is_some() && a.interactive {
        out.say("You cannot specify background mode and interactive mode together");
        return EXIT_BAD_COMBINATION;
    }
    let classes = a.define.join(",");
    if classes.len() > 1023 {
        out.log(Level::Error, "Argument too long (-D)");
        return crate::EXIT_FAILED;
    }
    let bundles = a.bundles.join(",");
    let mut args = Vec::new();
    if !classes.is_empty() {
        args.extend_from_slice(format!(" -D{classes}").as_bytes());
    }
    if !bundles.is_empty() {
        args.extend_from_slice(format!(" -b {bundles}").as_bytes());
    }
    if args.len() + 4 > rcf_core::frame::MAX_PAYLOAD {
        out.log(
            Level::Error,
            "Command longer than maximum transaction packet",
        );
        return crate::EXIT_FAILED;
    }
    let select: Vec<Vec<u8>> = a
        .select
        .iter()
        .flat_map(|s| s.split([',', ':', ' ']))
        .filter(|s| !s.is_empty())
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let hosts: Vec<String> = a
        .hail
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let version = match crate::protocol(&a.conn, out) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let key = match crate::host_key(workdir, false, out) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    let job = Arc::new(Job {
        workdir: workdir.to_path_buf(),
        key,
        conn: a.conn.clone(),
        version,
        args,
        select,
        out: out.clone(),
        interactive: a.interactive,
    });
    let codes: Vec<Option<i32>> = match a.background {
        None => hosts
            .iter()
            .map(|h| smol::block_on(job.clone().hail(h.clone())))
            .collect(),
        Some(n) => {
            let ex = smol::LocalExecutor::new();
            let sem = Arc::new(smol::lock::Semaphore::new(n.max(1)));
            let tasks: Vec<_> = hosts
                .iter()
                .map(|h| {
                    let (job, sem, h) = (job.clone(), sem.clone(), h.clone());
                    ex.spawn(async move {
                        let _permit = sem.acquire().await;
                        job.hail(h).await
                    })
                })
                .collect();
            smol::block_on(ex.run(async {
                let mut v = Vec::new();
                for t in tasks {
                    v.push(t.await);
                }
                v
            }))
        }
    };
    if codes.len() == 1 {
        return codes[0].map(|c| c as u8).unwrap_or(255);
    }
    codes.iter().filter(|c| **c != Some(0)).count().min(100) as u8
}

struct Job {
    workdir: std::path::PathBuf,
    key: Arc<rcf_core::keys::RsaPrivateKey>,
    conn: ConnArgs,
    version: rcf_core::banner::ProtocolVersion,
    args: Vec<u8>,
    select: Vec<Vec<u8>>,
    out: Output,
    interactive: bool,
}

/// Only one prompt at a time on the terminal.
static PROMPT: Mutex<()> = Mutex::new(());

impl Job {
    /// One host: connect (asking about an unknown key with `-i`), EXEC,
    /// print. `None` when the run did not happen or reported no exit code.
    async fn hail(self: Arc<Self>, host: String) -> Option<i32> {
        let addr = match crate::parse_host_port(&host) {
            Ok(a) => a,
            Err(_) => {
                self.out.log(
                    Level::Error,
                    &format!("HailServer: ERROR, could not resolve '{host}'"),
                );
                return None;
            }
        };
        self.out.log(
            Level::Info,
            &format!("Hailing {} : {}", addr.host, addr.port),
        );
        let mut trust = false;
        let mut client = loop {
            let mut opts = match crate::connect_options(
                &self.workdir,
                &self.key,
                &self.conn,
                self.version,
                trust,
                &self.out,
            ) {
                Ok(o) => o,
                Err(e) => {
                    self.out.log(Level::Error, &e);
                    return None;
                }
            };
            opts.host = addr.host.clone();
            opts.port = addr.port;
            let classic = crate::classic_options(&self.workdir, &self.key, self.version, false);
            match Conn::connect(opts, classic).await {
                Ok(c) => break c,
                Err(Error::Untrusted { key_id, message }) if self.interactive && !trust => {
                    self.out
                        .log(Level::Verbose, &format!("{message} ({key_id})"));
                    match ask_trust(&addr.host) {
                        Ok(true) => trust = true,
                        Ok(false) => return None,
                        Err(e) => {
                            self.out.log(Level::Error, &e);
                            return None;
                        }
                    }
                }
                Err(e) => {
                    self.out.log(Level::Error, &e.to_string());
                    self.out.log(
                        Level::Error,
                        &format!("Failed to connect to host: {}", addr.host),
                    );
                    return None;
                }
            }
        };
        let ip = addr.host.clone();
        let stdout = std::io::stdout();
        let r = client
            .exec(&self.args, &self.select, |line| {
                let text = String::from_utf8_lossy(line);
                // cf-runagent prints what follows `BAD:` as it came,
                // its leading space included (`!!  Unspecified …`).
                let shown = if let Some(rest) = text.strip_prefix("BAD:") {
                    format!("{ip}> !! {rest}")
                } else if let Some(rest) = text.strip_prefix("> ") {
                    format!("{ip}> -> {rest}")
                } else {
                    format!("{ip}> {text}")
                };
                let mut o = stdout.lock();
                o.write_all(shown.as_bytes())?;
                if !shown.ends_with('\n') {
                    o.write_all(b"\n")?;
                }
                o.flush()
            })
            .await;
        client.close().await;
        match r {
            Ok(code) => code,
            Err(e) => {
                self.out.log(Level::Error, &e.to_string());
                None
            }
        }
    }
}

/// cf-runagent's `-i` dialogue, on stdout/stdin.
fn ask_trust(host: &str) -> Result<bool, String> {
    let _one = PROMPT
        .lock()
        .map_err(|_| "prompt lock poisoned".to_string())?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let _ = write!(out, "WARNING - You do not have a public key from host {host} = {host}\n          Do you want to accept one on trust? (yes/no)\n\n--> ");
    let _ = out.flush();
    loop {
        let mut answer = String::new();
        match stdin.lock().read_line(&mut answer) {
            Ok(0) | Err(_) => return Err("EOF trying to read answer from terminal".into()),
            Ok(_) => {}
        }
        match answer.trim() {
            "yes" => {
                let _ = writeln!(out, "Will trust the key...");
                return Ok(true);
            }
            "no" => {
                let _ = writeln!(out, "Will not trust the key...");
                return Ok(false);
            }
            other => {
                let _ = write!(out, "Please reply yes or no...({other})\n--> ");
                let _ = out.flush();
            }
        }
    }
}
