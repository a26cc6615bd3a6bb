//! systemd integration without libsystemd: readiness notification
//! (`sd_notify`: one datagram to `$NOTIFY_SOCKET`) and socket activation
//! (`sd_listen_fds`: listening sockets inherited from fd 3 on, announced by
//! `$LISTEN_PID` and `$LISTEN_FDS`).

use std::net::TcpListener;
use std::os::fd::FromRawFd;

/// First inherited descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Send `state` (e.g. `READY=1`) to the service manager. Does nothing
/// without `$NOTIFY_SOCKET`; errors are returned for logging, never fatal.
/// A name starting with `@` is an abstract socket.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let path = path.to_string_lossy().into_owned();
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

/// Why inherited sockets could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `$LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS is not a number: {0:?}")]
    BadCount(String),
    /// A descriptor is not a listening TCP socket.
    #[error("inherited fd {0} is not a listening TCP socket: {1}")]
    NotTcp(i32, std::io::Error),
}

/// The listening sockets systemd passed, if it passed any to this process
/// (`$LISTEN_PID` equals our pid). Unsets the variables so children do not
/// inherit them, as `sd_listen_fds(1)` does.
pub fn listen_fds() -> Result<Vec<TcpListener>, ActivationError> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    if !pid_ok {
        return Ok(Vec::new());
    }
    let count = count.to_string_lossy().into_owned();
    // SAFETY (remove_var): called at startup before any other thread exists.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let n: i32 = count
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadCount(count.clone()))?;
    let mut v = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n.clamp(0, 64) {
        // Check it is a socket before taking ownership of it.
        // SAFETY: borrowed only for this check; the fd stays open.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&borrowed);
        match sock.r#type() {
            Ok(socket2::Type::STREAM) => {}
            Ok(_) => {
                return Err(ActivationError::NotTcp(
                    fd,
                    std::io::Error::other("not a stream socket"),
                ))
            }
            Err(e) => return Err(ActivationError::NotTcp(fd, e)),
        }
        // SAFETY: systemd hands us this descriptor; nothing else owns it.
        let l = unsafe { TcpListener::from_raw_fd(fd) };
        // Mark close-on-exec (EXEC children must not inherit the listener).
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        l.set_nonblocking(true)
            .map_err(|e| ActivationError::NotTcp(fd, e))?;
        l.local_addr().map_err(|e| ActivationError::NotTcp(fd, e))?;
        v.push(l);
    }
    Ok(v)
}
