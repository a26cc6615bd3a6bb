//! Running cfruncommand for EXEC: no shell, stdout and stderr merged line by
//! line, a deadline after which the program is killed, and a bound on how
//! many run at once, for a TLS or a classic connection alike. The argv comes
//! from `rcf_core::machine::exec::plan`.

use std::process::Stdio;
use std::sync::Arc;

use rcf_core::server::io::ExecChunk;
use rcf_core::server::{Answer, Event, Level};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::Shared;

/// Longest output line forwarded as one; longer ones are split.
const MAX_LINE: usize = 4000;

/// One running program of one connection.
pub(crate) struct Run {
    child: tokio::process::Child,
    lines: mpsc::Receiver<Vec<u8>>,
    deadline: tokio::time::Instant,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

async fn pump(r: impl AsyncRead + Unpin, tx: mpsc::Sender<Vec<u8>>) {
    let mut r = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        // Bounded read: a program printing without newlines cannot make us
        // buffer without limit.
        match (&mut r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

use tokio::io::AsyncReadExt as _;

/// Whether `ev` is an EXEC event, which [`handle`] answers.
pub(crate) fn takes(ev: &Event) -> bool {
    matches!(
        ev,
        Event::ExecStart { .. } | Event::ExecRead { .. } | Event::ExecKill { .. }
    )
}

/// Handle an EXEC event, if `ev` is one. `Some(answer)` (possibly none for
/// a kill) means the event was ours.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ip: &str,
    ev: &Event,
    run: &mut Option<Run>,
) -> Option<Option<Answer>> {
    match ev {
        Event::ExecStart { argv } => {
            let Some((prog, args)) = argv.split_first() else {
                return Some(Some(Answer::ExecStarted(Err("empty command".into()))));
            };
            let slot = match shared.exec_slots.clone().acquire_owned().await {
                Ok(s) => s,
                Err(_) => {
                    return Some(Some(Answer::ExecStarted(
                        Err("server shutting down".into()),
                    )))
                }
            };
            let child = tokio::process::Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => return Some(Some(Answer::ExecStarted(Err(e.to_string())))),
            };
            let (tx, rx) = mpsc::channel(64);
            if let Some(out) = child.stdout.take() {
                tokio::spawn(pump(out, tx.clone()));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(pump(err, tx));
            }
            *run = Some(Run {
                child,
                lines: rx,
                deadline: tokio::time::Instant::now() + shared.exec_timeout,
                _slot: slot,
            });
            Some(Some(Answer::ExecStarted(Ok(1))))
        }
        Event::ExecRead { .. } => {
            let Some(r) = run.as_mut() else {
                return Some(Some(Answer::ExecOutput(ExecChunk::Exit(None))));
            };
            match tokio::time::timeout_at(r.deadline, r.lines.recv()).await {
                Ok(Some(line)) => Some(Some(Answer::ExecOutput(ExecChunk::Line(line)))),
                Ok(None) => {
                    let mut r = run.take().expect("checked above");
                    let code = match tokio::time::timeout_at(r.deadline, r.child.wait()).await {
                        Ok(Ok(st)) => st.code(),
                        _ => {
                            let _ = r.child.kill().await;
                            None
                        }
                    };
                    Some(Some(Answer::ExecOutput(ExecChunk::Exit(code))))
                }
                Err(_) => {
                    shared
                        .logger
                        .log(Level::Error, Some(ip), "cfruncommand timed out, killing it");
                    let mut r = run.take().expect("checked above");
                    let _ = r.child.kill().await;
                    Some(Some(Answer::ExecOutput(ExecChunk::Exit(None))))
                }
            }
        }
        Event::ExecKill { .. } => {
            if let Some(mut r) = run.take() {
                let _ = r.child.kill().await;
            }
            Some(None)
        }
        _ => None,
    }
}
