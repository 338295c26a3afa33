//! `moby.sshforward.v1.SSH`: forwards ssh-agent connections made inside the build
//! (`RUN --mount=type=ssh`) to agent sockets on the client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use buildkit_proto::moby::sshforward::v1::ssh_server::{Ssh, SshServer};
use buildkit_proto::moby::sshforward::v1::{BytesMessage, CheckAgentRequest, CheckAgentResponse};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::metadata;
use crate::router::{Attachable, Router};

/// The id used when a mount names none.
pub const DEFAULT_ID: &str = "default";
/// The metadata key carrying the id on `ForwardAgent`.
pub const KEY_SSH_ID: &str = "buildkit.ssh.id";

/// Agent sockets by id.
///
/// ```no_run
/// # fn demo() -> Result<(), buildkit_session::Error> {
/// use buildkit_session::SshForward;
/// let ssh = SshForward::new().default_agent()?; // $SSH_AUTH_SOCK as "default"
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SshForward {
    agents: BTreeMap<String, PathBuf>,
}

impl SshForward {
    /// No agents yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forwards id `id` to the agent listening on `socket`.
    pub fn agent(mut self, id: impl Into<String>, socket: impl AsRef<Path>) -> Self {
        self.agents.insert(id.into(), socket.as_ref().to_path_buf());
        self
    }

    /// Forwards the id `default` to `$SSH_AUTH_SOCK`; fails when it is not set.
    pub fn default_agent(self) -> Result<Self> {
        let sock = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::Invalid(
                "SSH forwarding needs an agent: SSH_AUTH_SOCK is not set (start ssh-agent, or name a socket)"
                    .into(),
            )
        })?;
        Ok(self.agent(DEFAULT_ID, PathBuf::from(sock)))
    }

    /// The ids offered.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    /// Checks that every socket exists and is a socket.
    pub fn check(&self) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        for (id, path) in &self.agents {
            let md = std::fs::metadata(path)
                .map_err(|e| Error::io(format!("ssh agent {id:?}: {}", path.display()), e))?;
            if !md.file_type().is_socket() {
                return Err(Error::Invalid(format!(
                    "ssh agent {id:?}: {} is not a socket",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn socket(&self, id: &str) -> Result<&PathBuf, Status> {
        let id = if id.is_empty() { DEFAULT_ID } else { id };
        self.agents
            .get(id)
            .ok_or_else(|| Status::not_found(format!("unset ssh forward key {id}")))
    }
}

impl Attachable for SshForward {
    fn register(self: Box<Self>, router: &mut Router) {
        router.add_service(SshServer::new(*self));
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Ssh for SshForward {
    async fn check_agent(
        &self,
        request: Request<CheckAgentRequest>,
    ) -> Result<Response<CheckAgentResponse>, Status> {
        self.socket(&request.into_inner().id)?;
        Ok(Response::new(CheckAgentResponse {}))
    }

    type ForwardAgentStream = ByteStream;

    async fn forward_agent(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<ByteStream>, Status> {
        let id = metadata::first(request.metadata(), KEY_SSH_ID).unwrap_or_default();
        let path = self.socket(&id)?.clone();
        let conn = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
            Status::unavailable(format!("connecting to ssh agent {}: {e}", path.display()))
        })?;
        let (mut rd, mut wr) = conn.into_split();
        let mut inbound = request.into_inner();
        // Build -> agent: the daemon's CloseSend is EOF toward the agent.
        tokio::spawn(async move {
            while let Some(Ok(msg)) = inbound.next().await {
                if wr.write_all(&msg.data).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        // Agent -> build.
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        let msg = BytesMessage {
                            data: Bytes::copy_from_slice(&buf[..n]),
                        };
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!("ssh agent: {e}"))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
