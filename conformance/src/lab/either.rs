//! One server of either kind, for the tests and benchmarks that run the
//! same thing against the real cf-serverd 3.21 and against rcf-serverd.

use std::process::ExitStatus;

use super::{LabError, RcfServer, RealServer, ServerPolicy, Workdir};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// The real cf-serverd 3.21.
    Real,
    /// rcf-serverd.
    Rcf,
}

impl ServerKind {
    /// The daemon's name, as rows and messages show it.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Real => "cf-serverd",
            ServerKind::Rcf => "rcf-serverd",
        }
    }
}

/// A running server of either kind; stopped (by PID) when dropped.
pub enum AnyServer {
    /// cf-serverd.
    Real(RealServer),
    /// rcf-serverd.
    Rcf(RcfServer),
}

impl AnyServer {
    /// Start `kind` on `policy` with its usual lab flags.
    pub fn start(
        kind: ServerKind,
        wd: &Workdir,
        policy: &ServerPolicy,
    ) -> Result<AnyServer, LabError> {
        Ok(match kind {
            ServerKind::Real => AnyServer::Real(RealServer::start(wd, policy)?),
            ServerKind::Rcf => AnyServer::Rcf(RcfServer::start(wd, policy)?),
        })
    }

    /// Start `kind` with these flags instead of the lab's verbosity flags.
    pub fn start_with_flags(
        kind: ServerKind,
        wd: &Workdir,
        policy: &ServerPolicy,
        flags: &[&str],
    ) -> Result<AnyServer, LabError> {
        Ok(match kind {
            ServerKind::Real => AnyServer::Real(RealServer::start_with_flags(wd, policy, flags)?),
            ServerKind::Rcf => AnyServer::Rcf(RcfServer::start_with_flags(wd, policy, flags)?),
        })
    }

    /// Which kind this is.
    pub fn kind(&self) -> ServerKind {
        match self {
            AnyServer::Real(_) => ServerKind::Real,
            AnyServer::Rcf(_) => ServerKind::Rcf,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        match self {
            AnyServer::Real(s) => s.pid(),
            AnyServer::Rcf(s) => s.pid(),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        match self {
            AnyServer::Real(s) => s.port(),
            AnyServer::Rcf(s) => s.port(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        match self {
            AnyServer::Real(s) => s.log(),
            AnyServer::Rcf(s) => s.log(),
        }
    }

    /// Whether the process is still alive.
    pub fn is_running(&self) -> bool {
        match self {
            AnyServer::Real(s) => s.is_running(),
            AnyServer::Rcf(s) => s.is_running(),
        }
    }

    /// Stop it; the exit status where the lab reports one (cf-serverd).
    pub fn stop(self) -> Option<ExitStatus> {
        match self {
            AnyServer::Real(s) => s.stop().0,
            AnyServer::Rcf(s) => {
                s.stop();
                None
            }
        }
    }
}
