//! `rcf-agent net`: cf-net's connect, stat, get and opendir, printing what
//! cf-net 3.21 prints (copied from the real binary's output), with cf-net's
//! options: a comma-separated host list (`-H`, the policy server when
//! absent), `get -j N`, `-t`/`--tls-version` and `-c`/`--ciphers`.
//!
//! Differences from cf-net 3.21:
//! * cf-net exits 0 even when the command failed; rcf-agent exits 1 when a
//!   command failed on some host and 3 when a host could not be connected
//!   to (the worst over the list), which scripts can use.
//! * The connect and per-read timeout is settable (`--timeout`, cf-net's
//!   is a fixed 30 s), and `--protocol` picks the protocol (classic too).
//! * cf-net 3.21's `-t` and `-c` short forms are refused by its getopt
//!   string (only the long forms work there); rcf-agent takes both with
//!   the meaning cf-net's `--help` gives them.
//! * `get` writes through a temp file and rename.

use std::path::{Path, PathBuf};

use rcf_core::client::{GetFailure, Level};
use rcf_core::reply::FileType;
use rcf_smol::{ClassicOptions, Conn, ConnectOptions};

use crate::output::{json_str, Output};
use crate::{NetArgs, NetCmd};

fn type_text(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "a regular file",
        FileType::Dir => "a directory",
        FileType::Link => "a symbolic link",
        FileType::Fifo => "a named pipe (FIFO)",
        FileType::Block => "a block device file",
        FileType::Char => "a character device file",
        FileType::Socket => "a socket",
    }
}

/// The hosts to talk to, as cf-net finds them: the last `-H` (cf-net keeps
/// only the last one), else the first line of `WORKDIR/policy_server.dat`
/// (`PolicyServerReadFile`), split on `,` with empty names skipped
/// (`strtok`). `Err` is cf-net's message when neither is there.
pub fn hosts(workdir: &Path, given: &[String], out: &Output) -> Result<Vec<String>, String> {
    if given.len() > 1 {
        out.log(
            Level::Info,
            "Warning: multiple occurences of -H in command, only last one will be used.",
        );
    }
    let list = match given.last() {
        Some(h) => h.clone(),
        None => std::fs::read_to_string(workdir.join("policy_server.dat"))
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
            .filter(|l| !l.is_empty())
            .ok_or_else(|| "Error: no host name (and no policy_server.dat)".to_string())?,
    };
    Ok(list
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect())
}

/// `%d` replaced by `i`, as cf-net's `snprintf(buf, …, name, i)` does for
/// the names of a `get -j` (every `%d`; cf-net's C would read garbage for
/// a second one).
fn job_name(name: &str, i: u16) -> String {
    name.replace("%d", &i.to_string())
}

/// The (remote, local) names of each of a `get`'s `jobs` fetches, as
/// cf-net's `CFNetGet` makes them.
pub fn job_names(remote: &str, local: &str, jobs: u16) -> Vec<(String, String)> {
    if jobs <= 1 {
        return vec![(remote.to_string(), local.to_string())];
    }
    (0..jobs)
        .map(|i| {
            let l = if local.contains("%d") {
                job_name(local, i)
            } else {
                format!("{local}.{i}")
            };
            (job_name(remote, i), l)
        })
        .collect()
}

/// What every connection of the run shares.
struct Ctx<'a> {
    base: ConnectOptions,
    classic: Option<ClassicOptions>,
    out: &'a Output,
}

impl Ctx<'_> {
    /// Connect to one host of the list, printing cf-net's failure line.
    async fn connect(&self, server: &str) -> Result<Conn, u8> {
        let addr = match crate::parse_host_port(server) {
            Ok(a) => a,
            Err(e) => {
                self.out.log(Level::Error, &e);
                self.out.say(&format!("Failed to connect to '{server}'"));
                return Err(crate::EXIT_NO_SERVER);
            }
        };
        let mut opts = self.base.clone();
        opts.host = addr.host;
        opts.port = addr.port;
        match Conn::connect(opts, self.classic.clone()).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.out.log(Level::Verbose, &e.to_string());
                self.out.say(&format!("Failed to connect to '{server}'"));
                self.out.emit_json(&format!(
                    "{{\"ok\":false,\"server\":{},\"error\":{}}}",
                    json_str(server),
                    json_str(&e.to_string())
                ));
                Err(crate::EXIT_NO_SERVER)
            }
        }
    }
}

/// Run one cf-net command against each host of the list; the worst exit
/// code (0 ok, 1 a command failed, 3 a host was not reached).
pub fn run(workdir: &Path, a: &NetArgs, out: &Output) -> u8 {
    let conn = crate::ConnArgs {
        tls_ciphers: a.ciphers.clone(),
        tls_min_version: a.tls_version.clone(),
        ..crate::ConnArgs::new(&a.protocol, Some(a.timeout))
    };
    let version = match crate::protocol(&conn, out) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let NetCmd::Get {
        output: Some(o), ..
    } = &a.what
    {
        if o.as_os_str() == "-" {
            out.say("Output to stdout not yet implemented (TODO)");
            return crate::EXIT_FAILED;
        }
    }
    let hosts = match hosts(workdir, &a.host, out) {
        Ok(h) => h,
        Err(e) => {
            out.say(&e);
            return crate::EXIT_FAILED;
        }
    };
    let key = match crate::host_key(workdir, false, out) {
        Ok(k) => k,
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    // cf-net always trusts the server's key (and says so at notice level,
    // `Trusting new key: MD5=…`, as the real binary prints it).
    let base = match crate::connect_options(workdir, &key, &conn, version, true, out) {
        Ok(o) => o,
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    let ctx = Ctx {
        base,
        classic: crate::classic_options(workdir, &key, version, false),
        out,
    };
    let mut worst = crate::EXIT_OK;
    for server in &hosts {
        let code = smol::block_on(host(&ctx, server, &a.what));
        worst = worst.max(code);
    }
    worst
}

/// The command against one host.
async fn host(ctx: &Ctx<'_>, server: &str, what: &NetCmd) -> u8 {
    if let NetCmd::Get { path, output, jobs } = what {
        return get(ctx, server, path, output.as_deref(), *jobs).await;
    }
    let mut c = match ctx.connect(server).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let code = command(&mut c, server, what, ctx.out).await;
    c.close().await;
    code
}

/// The `--json` result of a command that failed on `path` at `server`; 1.
fn path_failed(out: &Output, server: &str, path: &str, error: &str) -> u8 {
    out.emit_json(&format!(
        "{{\"ok\":false,\"server\":{},\"path\":{},\"error\":{}}}",
        json_str(server),
        json_str(path),
        json_str(error)
    ));
    crate::EXIT_FAILED
}

/// cf-net's lines for a STAT the server refused (`get` also logs that it
/// failed, as `ProtocolStatGet` does); 1.
fn stat_refused(out: &Output, server: &str, path: &str, text: &str, in_get: bool) -> u8 {
    let ip = host_part(server);
    out.log(
        Level::Warning,
        &format!("Could not stat remote file {ip}:{path}, response: BAD: {text}"),
    );
    if in_get {
        out.log(
            Level::Error,
            &format!("Failed to stat remote file {ip}:{path}"),
        );
    }
    out.say(&format!("Could not stat: '{path}'"));
    path_failed(out, server, path, text)
}

fn fail(out: &Output, e: rcf_smol::Error) -> u8 {
    out.log(Level::Error, &e.to_string());
    out.emit_json(&format!(
        "{{\"ok\":false,\"error\":{}}}",
        json_str(&e.to_string())
    ));
    crate::EXIT_FAILED
}

/// The host part of `server` (cf-net's log lines name the address, not the port).
fn host_part(server: &str) -> String {
    crate::parse_host_port(server)
        .map(|a| a.host)
        .unwrap_or_else(|_| server.to_string())
}

async fn command(c: &mut Conn, server: &str, what: &NetCmd, out: &Output) -> u8 {
    match what {
        NetCmd::Connect => {
            out.say(&format!(
                "Connected & authenticated successfully to '{server}'"
            ));
            out.emit_json(&format!(
                "{{\"ok\":true,\"server\":{},\"server_key\":{}}}",
                json_str(server),
                json_str(c.server_key_id().unwrap_or(""))
            ));
            crate::EXIT_OK
        }
        NetCmd::Stat { path } => match c.stat(path.as_bytes()).await {
            Ok(Ok(st)) => {
                out.say(&format!("{server}:'{path}' is {}", type_text(st.file_type)));
                out.emit_json(&format!(
                    "{{\"ok\":true,\"server\":{},\"path\":{},\"type\":{},\"mode\":{},\"uid\":{},\"gid\":{},\"size\":{},\"atime\":{},\"mtime\":{},\"ctime\":{}}}",
                    json_str(server),
                    json_str(path),
                    json_str(type_text(st.file_type)),
                    st.mode,
                    st.uid,
                    st.gid,
                    st.size,
                    st.atime,
                    st.mtime,
                    st.ctime
                ));
                crate::EXIT_OK
            }
            Ok(Err(text)) => stat_refused(out, server, path, &text, false),
            Err(e) => fail(out, e),
        },
        NetCmd::Opendir { path } => match c.opendir(path.as_bytes()).await {
            Ok(Ok(names)) => {
                let mut items = Vec::new();
                for n in &names {
                    let s = String::from_utf8_lossy(n).into_owned();
                    out.say(&s);
                    items.push(json_str(&s));
                }
                out.emit_json(&format!(
                    "{{\"ok\":true,\"server\":{},\"path\":{},\"names\":[{}]}}",
                    json_str(server),
                    json_str(path),
                    items.join(",")
                ));
                crate::EXIT_OK
            }
            Ok(Err(text)) => {
                out.log(Level::Error, &format!("Protocol error: BAD: {text}"));
                path_failed(out, server, path, &text)
            }
            Err(e) => fail(out, e),
        },
        // `host` runs get through `get`; nothing to do on this connection.
        NetCmd::Get { .. } => crate::EXIT_OK,
    }
}

/// `get [-j N]`: each fetch over its own connection, all at once (cf-net
/// starts one thread per job); 1 when any of them failed.
async fn get(ctx: &Ctx<'_>, server: &str, path: &str, output: Option<&Path>, jobs: u16) -> u8 {
    let local = match output {
        Some(o) => o.to_string_lossy().into_owned(),
        None => Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into()),
    };
    let ex = smol::LocalExecutor::new();
    let tasks: Vec<_> = job_names(path, &local, jobs)
        .into_iter()
        .map(|(remote, local)| ex.spawn(get_one(ctx, server, remote, PathBuf::from(local))))
        .collect();
    ex.run(async {
        let mut worst = crate::EXIT_OK;
        for t in tasks {
            worst = worst.max(t.await);
        }
        worst
    })
    .await
}

/// One fetch of `get`: connect, STAT, GET to `dest`.
async fn get_one(ctx: &Ctx<'_>, server: &str, path: String, dest: PathBuf) -> u8 {
    let out = ctx.out;
    let mut c = match ctx.connect(server).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let code = match c.stat(path.as_bytes()).await {
        Ok(Ok(st)) => match get_to(&mut c, &path, st, &dest, out).await {
            Ok(()) => {
                out.emit_json(&format!(
                    "{{\"ok\":true,\"server\":{},\"path\":{},\"output\":{}}}",
                    json_str(server),
                    json_str(&path),
                    json_str(&dest.display().to_string())
                ));
                crate::EXIT_OK
            }
            Err(msg) => {
                out.log(Level::Error, &msg);
                path_failed(out, server, &path, &msg)
            }
        },
        Ok(Err(text)) => stat_refused(out, server, &path, &text, true),
        Err(e) => fail(out, e),
    };
    c.close().await;
    code
}

/// GET (size from the STAT) into `<dest>.cfnew`, fsync, check, rename.
async fn get_to(
    c: &mut Conn,
    path: &str,
    st: rcf_core::reply::StatReply,
    dest: &Path,
    out: &Output,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".cfnew");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let mut done = 0u64;
    let r = if st.size == 0 {
        Ok(Ok(()))
    } else {
        c.get(path.as_bytes(), st.size, |b| {
            w.write_all(b)?;
            done += b.len() as u64;
            out.progress(path, done, st.size);
            Ok(())
        })
        .await
    };
    let result = match r {
        Ok(Ok(())) => match w.into_inner() {
            Ok(f) => f.sync_all().map_err(|e| e.to_string()).and_then(|_| {
                let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if len == st.size {
                    std::fs::rename(&tmp, dest).map_err(|e| e.to_string())
                } else {
                    Err(format!("size mismatch: got {len} of {} bytes", st.size))
                }
            }),
            Err(e) => Err(e.error().to_string()),
        },
        Ok(Err(GetFailure::Refused(t))) => Err(format!("Network access to '{path}' denied: {t}")),
        Ok(Err(GetFailure::Denied)) => Err(format!("Network access to '{path}' denied")),
        Ok(Err(GetFailure::Changed)) => Err(format!("Source '{path}' changed while copying")),
        Err(e) => Err(e.to_string()),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_job_names_as_cf_net_makes_them() {
        assert_eq!(
            job_names("/m/a.cf", "a.cf", 1),
            vec![("/m/a.cf".into(), "a.cf".into())]
        );
        // One job: no substitution at all.
        assert_eq!(
            job_names("/m/%d.cf", "x%d", 1),
            vec![("/m/%d.cf".into(), "x%d".into())]
        );
        assert_eq!(
            job_names("/m/a.cf", "a.cf", 2),
            vec![
                ("/m/a.cf".into(), "a.cf.0".into()),
                ("/m/a.cf".into(), "a.cf.1".into())
            ]
        );
        assert_eq!(
            job_names("/m/f%d", "out-%d.bin", 3)[2],
            ("/m/f2".into(), "out-2.bin".into())
        );
    }

    #[test]
    fn host_list_from_flag_or_policy_server_dat() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(Level::Error, true);
        assert_eq!(
            hosts(dir.path(), &[], &out),
            Err("Error: no host name (and no policy_server.dat)".into())
        );
        std::fs::write(dir.path().join("policy_server.dat"), "  hub:5309,,b \nx\n").unwrap();
        assert_eq!(
            hosts(dir.path(), &[], &out).unwrap(),
            vec!["hub:5309".to_string(), "b".to_string()]
        );
        // The last -H wins, as in cf-net.
        assert_eq!(
            hosts(dir.path(), &["a,b".into(), "c".into()], &out).unwrap(),
            vec!["c".to_string()]
        );
    }
}
