//! The crate's one error type.

use std::fmt;

/// What went wrong while running a session or one of its services.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Attaching the session to the daemon failed (the `/session` upgrade or the
    /// `Control.Session` call).
    Attach(String),
    /// The HTTP/2 connection carrying the session failed.
    Transport(String),
    /// A configuration or input problem: a missing secret file, a directory that is not
    /// one, an invalid pattern.
    Invalid(String),
    /// A filesystem operation on a local path failed.
    Io {
        /// What was being done, and to which path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The peer broke the protocol, or sent something this side refuses (a hostile path).
    Protocol(String),
    /// dockerd refused or failed the `/session` upgrade.
    Docker(docker_api::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attach(m) => write!(f, "attaching the session: {m}"),
            Self::Transport(m) => write!(f, "session connection: {m}"),
            Self::Invalid(m) => write!(f, "{m}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Protocol(m) => write!(f, "{m}"),
            Self::Docker(e) => write!(f, "attaching the session to dockerd: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Docker(e) => Some(e),
            _ => None,
        }
    }
}

impl From<docker_api::Error> for Error {
    fn from(e: docker_api::Error) -> Self {
        Self::Docker(e)
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                tonic::Status::not_found(e.to_string())
            }
            Error::Protocol(_) => tonic::Status::failed_precondition(e.to_string()),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
