//! The crate's one error type.

use std::fmt;

/// A boxed error from a lower layer (I/O, TLS, hyper).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with a Docker Engine API call.
///
/// Every error names the endpoint it was talking to. API errors also carry the HTTP
/// status and the daemon's own message.
pub struct Error {
    kind: ErrorKind,
    endpoint: String,
    source: Option<BoxError>,
}

/// The class of an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The address could not be reached (refused, missing socket, DNS, TLS handshake).
    Connect,
    /// The daemon answered with an error status.
    Api {
        /// The HTTP status code.
        status: u16,
        /// The daemon's `message`, or the body text when it is not JSON.
        message: String,
    },
    /// The configuration is unusable (bad `DOCKER_HOST`, unreadable certificates, no
    /// crypto provider).
    Config(String),
    /// The connection broke or a protocol step failed after connecting.
    Transport(String),
    /// A response did not decode as the expected type.
    Decode(String),
    /// The call did not finish within its timeout.
    Timeout,
    /// A streamed operation reported an error inside its stream (build, pull, push,
    /// load).
    Stream(String),
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, endpoint: impl Into<String>) -> Self {
        Self {
            kind,
            endpoint: endpoint.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The class of this error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The endpoint (`unix:///var/run/docker.sock`, `tcp://host:2376`) that was used.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The HTTP status, for errors the daemon answered.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The daemon's message, for errors the daemon answered or streamed.
    pub fn message(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Api { message, .. } | ErrorKind::Stream(message) => Some(message),
            _ => None,
        }
    }

    /// True when the daemon could not be reached at all.
    pub fn is_connect(&self) -> bool {
        self.kind == ErrorKind::Connect
    }

    /// True for a 404 from the daemon (no such image, container, ...).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when a timeout expired.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// True when the TLS layer rejected the peer or its certificate.
    pub fn is_tls(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = cur {
            if e.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker API at {}: ", self.endpoint)?;
        match &self.kind {
            ErrorKind::Connect => {
                write!(f, "cannot connect")?;
                if let Some(s) = &self.source {
                    write!(f, ": {}", chain(s.as_ref()))?;
                }
                write!(
                    f,
                    " (is the daemon running there? set DOCKER_HOST to use another address)"
                )
            }
            ErrorKind::Api { status, message } => {
                write!(f, "daemon answered {status}: {message}")
            }
            ErrorKind::Config(m) => write!(f, "invalid configuration: {m}"),
            ErrorKind::Transport(m) => {
                write!(f, "{m}")?;
                if let Some(s) = &self.source {
                    write!(f, ": {}", chain(s.as_ref()))?;
                }
                Ok(())
            }
            ErrorKind::Decode(m) => write!(f, "unexpected response: {m}"),
            ErrorKind::Timeout => write!(
                f,
                "timed out (the limit is set with DockerBuilder::timeout and connect_timeout)"
            ),
            ErrorKind::Stream(m) => write!(f, "{m}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// "a: b: c" from an error and its sources, without repeating identical messages.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
