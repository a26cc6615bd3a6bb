//! The TCP connection under both protocols, opened as 3.21's
//! `SocketConnect` (libcfnet/net.c) opens it: the server's name resolved
//! (IPv4 only with `force_ipv4`), each address tried in turn with the
//! connect timeout, the socket first bound to `bindtointerface` when one
//! is set. Sockets and timers only; no protocol logic.

use std::net::{IpAddr, SocketAddr};

use rcf_core::client::Level;
use smol::net::TcpStream;
use smol::Timer;

use crate::{format_host_port, ConnectOptions, Error};

/// `name:port` resolved (an address literal as is), filtered to IPv4 when
/// `v4_only`.
async fn resolve(name: &str, port: u16, v4_only: bool) -> std::io::Result<Vec<SocketAddr>> {
    let all = match name.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => smol::net::resolve((name, port)).await?,
    };
    Ok(all
        .into_iter()
        .filter(|a| !v4_only || a.is_ipv4())
        .collect())
}

/// Connect to `opts.host:opts.port`. With `strict_bind` (a load
/// generator's chosen source address) the socket is bound to it or the
/// connect fails; otherwise `opts.bind_to` is looked up (a failed lookup
/// fails the connect, as in 3.21) and a bind that fails on every address
/// it resolves to is logged and the connection made unbound, as 3.21 does.
pub(crate) async fn open(
    opts: &ConnectOptions,
    strict_bind: Option<IpAddr>,
) -> Result<TcpStream, Error> {
    let addr = format_host_port(&opts.host, opts.port);
    let host = opts.host.trim_start_matches('[').trim_end_matches(']');
    let fail = |detail: String| Error::Connect {
        addr: addr.clone(),
        detail,
    };
    let remotes = resolve(host, opts.port, opts.force_ipv4)
        .await
        .map_err(|e| {
            fail(format!(
                "Unable to find host '{host}' service '{}' ({e})",
                opts.port
            ))
        })?;
    if remotes.is_empty() {
        return Err(fail(format!(
            "Unable to find host '{host}' service '{}' (no IPv4 address, and force_ipv4 is set)",
            opts.port
        )));
    }
    let locals = match (strict_bind, &opts.bind_to) {
        (Some(ip), _) => vec![SocketAddr::new(ip, 0)],
        (None, Some(b)) => resolve(
            b.trim_start_matches('[').trim_end_matches(']'),
            0,
            opts.force_ipv4,
        )
        .await
        .map_err(|e| {
            // An error in 3.21 too (the connection is not made).
            let m = format!("Unable to lookup interface '{b}' to bind. (getaddrinfo: {e})");
            (opts.log)(Level::Error, &m);
            fail(m)
        })?,
        (None, None) => Vec::new(),
    };
    let mut last = String::from("no address to connect to");
    for remote in remotes {
        (opts.log)(
            Level::Verbose,
            &format!(
                "Connecting to host {host}, port {} as address {}",
                opts.port,
                remote.ip()
            ),
        );
        let attempt = connect_one(opts, remote, &locals, strict_bind.is_some());
        let t = opts.timeout;
        match smol::future::or(async { Some(attempt.await) }, async {
            Timer::after(t).await;
            None
        })
        .await
        {
            Some(Ok(s)) => return Ok(s),
            Some(Err(e)) => last = e.to_string(),
            None => last = "Timeout connecting to server".into(),
        }
        (opts.log)(
            Level::Verbose,
            &format!("Unable to connect to address {} ({last})", remote.ip()),
        );
    }
    Err(fail(last))
}

/// One address: a socket of its family, bound to the first of `locals`
/// that accepts it, connected without blocking the executor.
async fn connect_one(
    opts: &ConnectOptions,
    remote: SocketAddr,
    locals: &[SocketAddr],
    strict: bool,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if !locals.is_empty() {
        let mut err = None;
        let bound = locals
            .iter()
            .any(|l| match socket.bind(&SockAddr::from(*l)) {
                Ok(()) => true,
                Err(e) => {
                    err = Some(e);
                    false
                }
            });
        if !bound {
            let e = err.unwrap_or_else(|| std::io::Error::other("no address"));
            if strict {
                return Err(e);
            }
            let name = opts.bind_to.as_deref().unwrap_or("");
            (opts.log)(
                Level::Error,
                &format!("Unable to bind to interface '{name}'. (bind: {e})"),
            );
        }
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(remote)) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(einprogress())
                || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream: std::net::TcpStream = socket.into();
    let stream = smol::Async::new(stream)?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    stream.get_ref().peer_addr()?;
    Ok(TcpStream::from(stream))
}

/// `EINPROGRESS` (115 on Linux, 36 on the BSDs and macOS).
fn einprogress() -> i32 {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        115
    } else {
        36
    }
}
