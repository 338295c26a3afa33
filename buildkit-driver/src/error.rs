//! The crate's one error type.

use std::fmt;

/// What went wrong reaching BuildKit or running a build.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The daemon could not be reached or did not become ready.
    Connect {
        /// The driver (`moby`, `docker-container`, `remote`).
        driver: String,
        /// What happened.
        message: String,
    },
    /// The request asks for something this daemon cannot do; nothing was sent.
    Unsupported {
        /// The driver.
        driver: String,
        /// What was asked for (e.g. `exporter "oci"`).
        what: String,
        /// What to use instead.
        instead: String,
    },
    /// The build failed on the daemon.
    Solve(SolveError),
    /// A Control API call failed.
    Call {
        /// The call (`ListWorkers`, `Prune`, ...).
        call: &'static str,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The session failed (a secret that cannot be read, a broken transfer, ...).
    Session(buildkit_session::Error),
    /// A Docker Engine API call failed.
    Docker(docker_api::Error),
    /// The build description is invalid.
    Invalid(String),
    /// The build was cancelled by the caller.
    Cancelled,
}

/// A failed solve, with what the daemon said.
#[derive(Debug, Clone)]
pub struct SolveError {
    /// The daemon's message, e.g. `process "/bin/sh -c exit 3" did not complete
    /// successfully: exit code: 3` or `dockerfile parse error on line 2: ...`.
    pub message: String,
    /// The gRPC code.
    pub code: tonic::Code,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { driver, message } => write!(f, "driver {driver}: {message}"),
            Self::Unsupported {
                driver,
                what,
                instead,
            } => {
                write!(f, "driver {driver} does not support {what}; {instead}")
            }
            Self::Solve(e) => write!(f, "build failed: {}", e.message),
            Self::Call { call, status } => write!(f, "{call}: {}", status.message()),
            Self::Session(e) => write!(f, "session: {e}"),
            Self::Docker(e) => write!(f, "{e}"),
            Self::Invalid(m) => write!(f, "{m}"),
            Self::Cancelled => write!(f, "the build was cancelled"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Session(e) => Some(e),
            Self::Docker(e) => Some(e),
            Self::Call { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl From<buildkit_session::Error> for Error {
    fn from(e: buildkit_session::Error) -> Self {
        Self::Session(e)
    }
}

impl From<docker_api::Error> for Error {
    fn from(e: docker_api::Error) -> Self {
        Self::Docker(e)
    }
}

impl Error {
    pub(crate) fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Call { call, status }
    }

    /// The failed solve's details, when the build itself failed.
    pub fn solve_error(&self) -> Option<&SolveError> {
        match self {
            Self::Solve(e) => Some(e),
            _ => None,
        }
    }

    /// True when the request was refused before solving because the daemon lacks a
    /// capability.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
