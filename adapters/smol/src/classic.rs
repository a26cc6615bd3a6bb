//! Classic-protocol (v1) connections for the agent, with the same calls as
//! the TLS [`Client`](crate::Client), and [`Conn`] to hold either.
//!
//! Which key a server has is remembered per `host:port` in
//! `WORKDIR/state/rcf_classic_keys` (CFEngine keeps this in lastseen). A
//! known server is greeted with `SAUTH y`, so it must prove it holds its
//! key; an unknown one gets `SAUTH n` and is only accepted with `trustkey`,
//! as cf-agent does.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rcf_core::classic::{ClassicClient, ClassicClientError, ClientConfig, ClientEvent};
use rcf_core::client::{ClientError, GetFailure, Level, Now};
use rcf_core::keys::{DigestKind, RsaPrivateKey, RsaPublicKey};
use rcf_core::reply::StatReply;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;

use crate::{format_host_port, unix_now, Client, ConnectOptions, Error};

/// What a classic connection needs beyond [`ConnectOptions`].
#[derive(Clone)]
pub struct ClassicOptions {
    /// Our host key (`localhost.priv`).
    pub key: Arc<RsaPrivateKey>,
    /// Use the encrypted command forms (`SSYNCH`, `SGET`, …).
    pub encrypt: bool,
    /// `WORKDIR/state`, where the host → key map lives.
    pub state_dir: PathBuf,
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Session(ClientError::Transport(e.to_string()))
}

/// A classic connection's failure as the TLS client reports the same:
/// silence is a timeout, a close mid-reply a hang-up, the rest transport.
fn failure(e: ClassicClientError) -> Error {
    match e {
        ClassicClientError::Timeout(ms) => Error::Session(ClientError::Timeout(ms)),
        ClassicClientError::HungUp => Error::Session(ClientError::HungUp(1)),
        e => transport(e),
    }
}

/// The machine's clock: monotonic ms since `start`, and the wall clock.
fn clock(start: Instant) -> Now {
    Now {
        mono_ms: start.elapsed().as_millis() as u64,
        unix_s: unix_now(),
    }
}

/// One authenticated classic connection.
pub struct ClassicConn {
    stream: TcpStream,
    client: ClassicClient,
    /// The origin of the machine's monotonic clock.
    start: Instant,
    encrypt: bool,
    server_key_id: String,
    buf: Vec<u8>,
    broken: bool,
}

fn map_file(state: &std::path::Path) -> PathBuf {
    state.join("rcf_classic_keys")
}

fn known_key(
    opts: &ConnectOptions,
    classic: &ClassicOptions,
    hp: &str,
) -> Option<(String, RsaPublicKey)> {
    let text = std::fs::read_to_string(map_file(&classic.state_dir)).ok()?;
    let id = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(h, _)| *h == hp)
        .map(|(_, id)| id.trim().to_string())
        .next_back()?;
    let pem = std::fs::read(opts.ppkeys.join(format!("{}-{id}.pub", opts.local_user))).ok()?;
    let key = rcf_core::keys::parse_public_pem(&pem).ok()?;
    (rcf_core::keys::key_id(&key, DigestKind::Md5).to_string() == id).then_some((id, key))
}

fn remember(
    opts: &ConnectOptions,
    classic: &ClassicOptions,
    hp: &str,
    key: &RsaPublicKey,
) -> Result<String, String> {
    use rcf_core::keys::trust::TrustStore;
    let store = TrustStore::new(rcf_fs::ppkeys::FsPpkeys::new(&opts.ppkeys), DigestKind::Md5);
    let saved = store
        .trust(&opts.local_user, key)
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&classic.state_dir).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(map_file(&classic.state_dir))
        .map_err(|e| e.to_string())?;
    writeln!(f, "{hp} {}", saved.id).map_err(|e| e.to_string())?;
    Ok(saved.id.to_string())
}

impl ClassicConn {
    /// Connect and run the key exchange.
    pub async fn connect(
        opts: ConnectOptions,
        classic: ClassicOptions,
    ) -> Result<ClassicConn, Error> {
        let hp = format_host_port(&opts.host, opts.port);
        let stream = crate::tcp::open(&opts, None).await?;
        let _ = stream.set_nodelay(true);
        let local_ip = stream
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into());
        let known = known_key(&opts, &classic, &hp);
        let cfg = ClientConfig {
            local_ip,
            fqdn: crate::hostname(),
            user: opts.local_user.clone(),
            key: classic.key.clone(),
            server_key: known.as_ref().map(|(_, k)| k.clone()),
            trust_server: opts.trust_new,
            timeout_ms: opts.timeout.as_millis() as u64,
        };
        let start = Instant::now();
        let client =
            ClassicClient::new(cfg, clock(start), &mut rand_core::OsRng).map_err(transport)?;
        let mut c = ClassicConn {
            stream,
            client,
            start,
            encrypt: classic.encrypt,
            server_key_id: String::new(),
            buf: vec![0u8; 32 * 1024],
            broken: false,
        };
        let ev = match c.step().await? {
            ClientEvent::Failed(ClassicClientError::Untrusted) => {
                return Err(Error::Untrusted {
                    key_id: String::new(),
                    message: format!(
                        "Not authorized to trust public key of server '{hp}' (trustkey = false)"
                    ),
                })
            }
            ev => ev,
        };
        match ev {
            ClientEvent::Failed(e) => Err(failure(e)),
            ClientEvent::Authenticated {
                server_key,
                server_key_id,
                newly_trusted,
                s1,
            } => {
                (opts.log)(
                    Level::Verbose,
                    &format!("Classic key exchange with '{hp}': {s1}"),
                );
                if newly_trusted || known.is_none() {
                    let id = remember(&opts, &classic, &hp, &server_key).map_err(transport)?;
                    (opts.log)(Level::Notice, &format!("Trusting new key: {id}"));
                }
                c.server_key_id = server_key_id;
                Ok(c)
            }
            other => Err(transport(format!(
                "unexpected event during the key exchange: {other:?}"
            ))),
        }
    }

    /// Write what the machine wants sent, then read (until the machine's
    /// `poll_timeout`) until it has an event. A `Failed` event is handed
    /// out as it is: the request methods map it to an error.
    async fn step(&mut self) -> Result<ClientEvent, Error> {
        loop {
            while let Some(b) = self.client.poll_transmit() {
                if let Err(e) = self.stream.write_all(&b).await {
                    self.broken = true;
                    return Err(e.into());
                }
            }
            if let Some(ev) = self.client.poll_event() {
                self.broken |= self.client.is_closed();
                return Ok(ev);
            }
            let Some(deadline) = self.client.poll_timeout() else {
                // Nothing is due from the server: a step with no request
                // outstanding is the caller's mistake.
                return Err(transport("no reply is due on this classic connection"));
            };
            let wait = deadline.saturating_sub(clock(self.start).mono_ms);
            let read = self.stream.read(&mut self.buf);
            let n = smol::future::or(async { Some(read.await) }, async {
                Timer::after(std::time::Duration::from_millis(wait)).await;
                None
            })
            .await;
            let now = clock(self.start);
            match n {
                None => self.client.handle_timeout(now),
                Some(Ok(0)) => self.client.handle_eof(now),
                Some(Err(e)) => {
                    self.broken = true;
                    return Err(e.into());
                }
                Some(Ok(n)) => self
                    .client
                    .handle_input(now, &self.buf[..n], &mut rand_core::OsRng),
            }
        }
    }

    /// The next event of a request's reply; a failure becomes the error
    /// the TLS client would give (a change during the transfer is the
    /// caller's to report as [`GetFailure::Changed`]).
    async fn reply(&mut self) -> Result<ClientEvent, Error> {
        match self.step().await? {
            ClientEvent::Failed(e) => Err(failure(e)),
            ev => Ok(ev),
        }
    }

    /// The server key's id.
    pub fn server_key_id(&self) -> Option<&str> {
        (!self.server_key_id.is_empty()).then_some(self.server_key_id.as_str())
    }

    /// Whether another request may be sent.
    pub fn is_usable(&self) -> bool {
        !self.broken && self.client.is_idle()
    }

    /// `SYNCH`/`SSYNCH … STAT`.
    pub async fn stat(&mut self, path: &[u8]) -> Result<Result<StatReply, String>, Error> {
        let now = clock(self.start);
        self.client
            .stat(now, path, self.encrypt)
            .map_err(transport)?;
        match self.reply().await? {
            ClientEvent::Stat(s) => Ok(Ok(s)),
            ClientEvent::Refused(t) => Ok(Err(t)),
            other => Err(transport(format!("unexpected reply {other:?}"))),
        }
    }

    /// `GET`/`SGET`: exactly `size` bytes to `on_data`.
    pub async fn get(
        &mut self,
        path: &[u8],
        size: u64,
        mut on_data: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Result<(), GetFailure>, Error> {
        let now = clock(self.start);
        self.client
            .get(now, path, size, self.encrypt)
            .map_err(transport)?;
        let mut sink_err = None;
        loop {
            match self.step().await {
                Ok(ClientEvent::Data(d)) => {
                    if sink_err.is_none() {
                        sink_err = on_data(&d).err();
                    }
                }
                Ok(ClientEvent::FileDone) => {
                    return match sink_err {
                        Some(e) => Err(Error::Io(e)),
                        None => Ok(Ok(())),
                    }
                }
                Ok(ClientEvent::Refused(t)) => return Ok(Err(GetFailure::Refused(t))),
                Ok(ClientEvent::Failed(ClassicClientError::Changed)) => {
                    return Ok(Err(GetFailure::Changed))
                }
                Ok(ClientEvent::Failed(e)) => return Err(failure(e)),
                Ok(other) => return Err(transport(format!("unexpected reply {other:?}"))),
                Err(e) => return Err(e),
            }
        }
    }

    /// `OPENDIR`/`SOPENDIR`.
    pub async fn opendir(&mut self, path: &[u8]) -> Result<Result<Vec<Vec<u8>>, String>, Error> {
        let now = clock(self.start);
        self.client
            .opendir(now, path, self.encrypt)
            .map_err(transport)?;
        match self.reply().await? {
            ClientEvent::Listing(l) => Ok(Ok(l)),
            ClientEvent::Refused(t) => Ok(Err(t)),
            other => Err(transport(format!("unexpected reply {other:?}"))),
        }
    }

    /// `MD5`/`SMD5`: `true` when the server's file differs.
    pub async fn md5(
        &mut self,
        path: &[u8],
        digest: [u8; 16],
    ) -> Result<Result<bool, String>, Error> {
        let now = clock(self.start);
        self.client
            .md5(now, path, &digest, self.encrypt)
            .map_err(transport)?;
        match self.reply().await? {
            ClientEvent::Md5 { differs } => Ok(Ok(differs)),
            ClientEvent::Refused(t) => Ok(Err(t)),
            other => Err(transport(format!("unexpected reply {other:?}"))),
        }
    }

    /// `EXEC` (cf-runagent), plain as cf-runagent sends it: each output
    /// line to `on_line`; the remote exit code, if one was reported.
    pub async fn exec(
        &mut self,
        args: &[u8],
        select: &[Vec<u8>],
        mut on_line: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Option<i32>, Error> {
        let now = clock(self.start);
        self.client.exec(now, args, select).map_err(transport)?;
        loop {
            match self.reply().await? {
                ClientEvent::ExecLine(l) => on_line(&l)?,
                ClientEvent::ExecDone(code) => return Ok(code),
                other => return Err(transport(format!("unexpected reply {other:?}"))),
            }
        }
    }

    /// Close the socket.
    pub async fn close(mut self) {
        let _ = self.stream.close().await;
    }
}

/// A connection in either protocol, with one set of calls.
pub enum Conn {
    /// Protocol 2/3 over TLS.
    Tls(Client),
    /// Protocol 1 (classic).
    Classic(ClassicConn),
}

impl Conn {
    /// Connect with TLS, or classic when `classic` is given.
    pub async fn connect(
        opts: ConnectOptions,
        classic: Option<ClassicOptions>,
    ) -> Result<Conn, Error> {
        match classic {
            Some(c) => ClassicConn::connect(opts, c).await.map(Conn::Classic),
            None => Client::connect(opts).await.map(Conn::Tls),
        }
    }

    /// The server key's id.
    pub fn server_key_id(&self) -> Option<&str> {
        match self {
            Conn::Tls(c) => c.server_key_id(),
            Conn::Classic(c) => c.server_key_id(),
        }
    }

    /// Whether another request may be sent.
    pub fn is_usable(&self) -> bool {
        match self {
            Conn::Tls(c) => c.is_usable(),
            Conn::Classic(c) => c.is_usable(),
        }
    }

    /// STAT.
    pub async fn stat(&mut self, path: &[u8]) -> Result<Result<StatReply, String>, Error> {
        match self {
            Conn::Tls(c) => c.stat(path).await,
            Conn::Classic(c) => c.stat(path).await,
        }
    }

    /// Several STATs; pipelined over TLS, one by one over classic.
    pub async fn stat_many(
        &mut self,
        paths: &[Vec<u8>],
    ) -> Result<Vec<Result<StatReply, String>>, Error> {
        match self {
            Conn::Tls(c) => c.stat_many(paths).await,
            Conn::Classic(c) => {
                let mut v = Vec::with_capacity(paths.len());
                for p in paths {
                    v.push(c.stat(p).await?);
                }
                Ok(v)
            }
        }
    }

    /// GET.
    pub async fn get(
        &mut self,
        path: &[u8],
        size: u64,
        on_data: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Result<(), GetFailure>, Error> {
        match self {
            Conn::Tls(c) => c.get(path, size, on_data).await,
            Conn::Classic(c) => c.get(path, size, on_data).await,
        }
    }

    /// OPENDIR.
    pub async fn opendir(&mut self, path: &[u8]) -> Result<Result<Vec<Vec<u8>>, String>, Error> {
        match self {
            Conn::Tls(c) => c.opendir(path).await,
            Conn::Classic(c) => c.opendir(path).await,
        }
    }

    /// MD5.
    pub async fn md5(
        &mut self,
        path: &[u8],
        digest: [u8; 16],
    ) -> Result<Result<bool, String>, Error> {
        match self {
            Conn::Tls(c) => c.md5(path, digest).await,
            Conn::Classic(c) => c.md5(path, digest).await,
        }
    }

    /// Several MD5s (`(path, local digest)`); pipelined over TLS, one by
    /// one over classic.
    pub async fn md5_many(
        &mut self,
        items: &[(Vec<u8>, [u8; 16])],
    ) -> Result<Vec<Result<bool, String>>, Error> {
        match self {
            Conn::Tls(c) => c.md5_many(items).await,
            Conn::Classic(c) => {
                let mut v = Vec::with_capacity(items.len());
                for (p, d) in items {
                    v.push(c.md5(p, *d).await?);
                }
                Ok(v)
            }
        }
    }

    /// `EXEC` (cf-runagent): output lines to `on_line`, the remote exit code.
    pub async fn exec(
        &mut self,
        args: &[u8],
        select: &[Vec<u8>],
        on_line: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Option<i32>, Error> {
        match self {
            Conn::Tls(c) => c.exec(args, select, on_line).await,
            Conn::Classic(c) => c.exec(args, select, on_line).await,
        }
    }

    /// Close.
    pub async fn close(self) {
        match self {
            Conn::Tls(c) => c.close().await,
            Conn::Classic(c) => c.close().await,
        }
    }
}
