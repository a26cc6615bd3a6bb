//! `rcf-agent net`: cf-net's connect, stat, get and opendir, printing what
//! cf-net 3.21 prints (copied from the real binary's output). cf-net 3.21
//! exits 0 even when the command failed; rcf-agent exits 1 (3 when the
//! connection failed), which scripts can use.

use std::path::{Path, PathBuf};

use rcf_core::client::{GetFailure, Level};
use rcf_core::reply::FileType;
use rcf_smol::Conn;

use crate::output::{json_str, Output};
use crate::{ConnArgs, NetCmd};

fn type_text(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "a regular file",
        FileType::Dir => "a directory",
        FileType::Link => "a symbolic link",
        FileType::Fifo => "a named pipe (FIFO)",
        FileType::Block => "a block device",
        FileType::Char => "a character device",
        FileType::Socket => "a socket",
    }
}

/// Run one cf-net command.
pub fn run(workdir: &Path, host: &str, conn: &ConnArgs, what: &NetCmd, out: &Output) -> u8 {
    let version = match crate::protocol(conn, out) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let addr = match crate::parse_host_port(host) {
        Ok(a) => a,
        Err(e) => {
            out.log(Level::Error, &e);
            return 2;
        }
    };
    let key = match crate::host_key(workdir, false, out) {
        Ok(k) => k,
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    // cf-net always trusts the server's key.
    let mut opts = match crate::connect_options(workdir, &key, conn, version, true, out) {
        Ok(o) => o,
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    // cf-net trusts silently (its "Trusting new key" is below its default level).
    let quiet = out.clone();
    opts.log = std::sync::Arc::new(move |l, m| {
        quiet.log(
            if l == Level::Notice {
                Level::Verbose
            } else {
                l
            },
            m,
        )
    });
    opts.host = addr.host.clone();
    opts.port = addr.port;
    let shown = format!("{}:{}", addr.host, addr.port);
    let classic = crate::classic_options(workdir, &key, version, false);
    smol::block_on(async {
        let mut c = match Conn::connect(opts, classic).await {
            Ok(c) => c,
            Err(e) => {
                out.log(Level::Verbose, &e.to_string());
                out.say(&format!("Failed to connect to '{shown}'"));
                out.emit_json(&format!(
                    "{{\"ok\":false,\"error\":{}}}",
                    json_str(&e.to_string())
                ));
                return crate::EXIT_NO_SERVER;
            }
        };
        let code = command(&mut c, &addr.host, &shown, what, out).await;
        c.close().await;
        code
    })
}

async fn command(c: &mut Conn, ip: &str, shown: &str, what: &NetCmd, out: &Output) -> u8 {
    let fail = |e: rcf_smol::Error| {
        out.log(Level::Error, &e.to_string());
        out.emit_json(&format!(
            "{{\"ok\":false,\"error\":{}}}",
            json_str(&e.to_string())
        ));
        crate::EXIT_FAILED
    };
    match what {
        NetCmd::Connect => {
            out.say(&format!(
                "Connected & authenticated successfully to '{shown}'"
            ));
            out.emit_json(&format!(
                "{{\"ok\":true,\"server\":{},\"server_key\":{}}}",
                json_str(shown),
                json_str(c.server_key_id().unwrap_or(""))
            ));
            crate::EXIT_OK
        }
        NetCmd::Stat { path } => match c.stat(path.as_bytes()).await {
            Ok(Ok(st)) => {
                out.say(&format!("{shown}:'{path}' is {}", type_text(st.file_type)));
                out.emit_json(&format!(
                    "{{\"ok\":true,\"path\":{},\"type\":{},\"mode\":{},\"uid\":{},\"gid\":{},\"size\":{},\"atime\":{},\"mtime\":{},\"ctime\":{}}}",
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
            Ok(Err(text)) => {
                out.log(
                    Level::Warning,
                    &format!("Could not stat remote file {ip}:{path}, response: BAD: {text}"),
                );
                out.say(&format!("Could not stat: '{path}'"));
                out.emit_json(&format!(
                    "{{\"ok\":false,\"path\":{},\"error\":{}}}",
                    json_str(path),
                    json_str(&text)
                ));
                crate::EXIT_FAILED
            }
            Err(e) => fail(e),
        },
        NetCmd::Get { path, output } => {
            let st = match c.stat(path.as_bytes()).await {
                Ok(Ok(st)) => st,
                Ok(Err(text)) => {
                    out.log(
                        Level::Warning,
                        &format!("Could not stat remote file {ip}:{path}, response: BAD: {text}"),
                    );
                    out.log(
                        Level::Error,
                        &format!("Failed to stat remote file {ip}:{path}"),
                    );
                    out.say(&format!("Could not stat: '{path}'"));
                    out.emit_json(&format!(
                        "{{\"ok\":false,\"path\":{},\"error\":{}}}",
                        json_str(path),
                        json_str(&text)
                    ));
                    return crate::EXIT_FAILED;
                }
                Err(e) => return fail(e),
            };
            let dest = output.clone().unwrap_or_else(|| {
                PathBuf::from(
                    Path::new(path)
                        .file_name()
                        .map(|n| n.to_os_string())
                        .unwrap_or_else(|| "file".into()),
                )
            });
            match get_to(c, path, st, &dest, out).await {
                Ok(()) => {
                    out.emit_json(&format!(
                        "{{\"ok\":true,\"path\":{},\"output\":{}}}",
                        json_str(path),
                        json_str(&dest.display().to_string())
                    ));
                    crate::EXIT_OK
                }
                Err(msg) => {
                    out.log(Level::Error, &msg);
                    out.emit_json(&format!(
                        "{{\"ok\":false,\"path\":{},\"error\":{}}}",
                        json_str(path),
                        json_str(&msg)
                    ));
                    crate::EXIT_FAILED
                }
            }
        }
        NetCmd::Opendir { path } => match c.opendir(path.as_bytes()).await {
            Ok(Ok(names)) => {
                let mut items = Vec::new();
                for n in &names {
                    let s = String::from_utf8_lossy(n).into_owned();
                    out.say(&s);
                    items.push(json_str(&s));
                }
                out.emit_json(&format!(
                    "{{\"ok\":true,\"path\":{},\"names\":[{}]}}",
                    json_str(path),
                    items.join(",")
                ));
                crate::EXIT_OK
            }
            Ok(Err(text)) => {
                out.log(Level::Error, &format!("Protocol error: BAD: {text}"));
                out.emit_json(&format!(
                    "{{\"ok\":false,\"path\":{},\"error\":{}}}",
                    json_str(path),
                    json_str(&text)
                ));
                crate::EXIT_FAILED
            }
            Err(e) => fail(e),
        },
    }
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
