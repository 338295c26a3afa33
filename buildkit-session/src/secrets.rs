//! `moby.buildkit.secrets.v1.Secrets`: values for `RUN --mount=type=secret`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{
    Secrets as SecretsService, SecretsServer,
};
use buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::router::{Attachable, Router};

/// The largest secret served, as upstream's client allows.
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env(String),
    Bytes(Bytes),
}

/// Secrets by id, read when the daemon asks for them. Secrets reach only the `RUN`
/// steps that mount them and never land in image layers.
///
/// ```
/// use buildkit_session::Secrets;
/// let secrets = Secrets::new()
///     .file("npmrc", "/home/me/.npmrc")
///     .env("token", "GITHUB_TOKEN")
///     .bytes("inline", b"value".to_vec());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    sources: BTreeMap<String, Source>,
}

impl Secrets {
    /// No secrets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The secret `id` is the content of this file.
    pub fn file(mut self, id: impl Into<String>, path: impl AsRef<Path>) -> Self {
        self.sources
            .insert(id.into(), Source::File(path.as_ref().to_path_buf()));
        self
    }

    /// The secret `id` is the value of this environment variable.
    pub fn env(mut self, id: impl Into<String>, var: impl Into<String>) -> Self {
        self.sources.insert(id.into(), Source::Env(var.into()));
        self
    }

    /// The secret `id` is these bytes.
    pub fn bytes(mut self, id: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.sources.insert(id.into(), Source::Bytes(data.into()));
        self
    }

    /// The ids offered.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Reads every secret once, so that a missing file, an unset variable or an
    /// oversized secret fails before a build starts rather than in the middle of it.
    pub fn check(&self) -> Result<()> {
        for (id, source) in &self.sources {
            match source {
                // Only looked at: a pipe or `/dev/stdin` must keep its one-time
                // content for the daemon's request.
                Source::File(path) => {
                    let md = std::fs::metadata(path).map_err(|e| {
                        Error::io(format!("secret {id:?}: reading {}", path.display()), e)
                    })?;
                    if md.is_dir() {
                        return Err(Error::Invalid(format!(
                            "secret {id:?}: {} is a directory, not a file",
                            path.display()
                        )));
                    }
                    if md.is_file() {
                        check_size(id, md.len())?;
                        std::fs::File::open(path).map_err(|e| {
                            Error::io(format!("secret {id:?}: reading {}", path.display()), e)
                        })?;
                    }
                }
                Source::Env(_) | Source::Bytes(_) => {
                    self.read(id)?;
                }
            }
        }
        Ok(())
    }

    /// The value of secret `id`; `Ok(None)` when no such id is offered.
    pub fn read(&self, id: &str) -> Result<Option<Bytes>> {
        let Some(source) = self.sources.get(id) else {
            return Ok(None);
        };
        let data = match source {
            Source::File(path) => {
                use std::io::Read;
                let err = |e| Error::io(format!("secret {id:?}: reading {}", path.display()), e);
                let file = std::fs::File::open(path).map_err(err)?;
                // At most one byte over the limit, whatever the file claims its size is.
                let mut data = Vec::new();
                file.take(MAX_SECRET_SIZE + 1)
                    .read_to_end(&mut data)
                    .map_err(err)?;
                Bytes::from(data)
            }
            Source::Env(var) => Bytes::from(std::env::var(var).map_err(|_| {
                Error::Invalid(format!(
                    "secret {id:?}: environment variable {var} is not set"
                ))
            })?),
            Source::Bytes(b) => b.clone(),
        };
        check_size(id, data.len() as u64)?;
        Ok(Some(data))
    }
}

fn check_size(id: &str, size: u64) -> Result<()> {
    if size > MAX_SECRET_SIZE {
        return Err(Error::Invalid(format!(
            "secret {id:?} is {size} bytes, over the {MAX_SECRET_SIZE}-byte (500 KiB) limit for secrets"
        )));
    }
    Ok(())
}

impl Attachable for Secrets {
    fn register(self: Box<Self>, router: &mut Router) {
        router.add_service(SecretsServer::new(*self));
    }
}

#[tonic::async_trait]
impl SecretsService for Secrets {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        let this = self.clone();
        let id2 = id.clone();
        let data = tokio::task::spawn_blocking(move || this.read(&id2))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        match data {
            Some(data) => Ok(Response::new(GetSecretResponse { data })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_file_secret_is_refused_with_id_and_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'x'; 600 * 1024]).unwrap();
        let s = Secrets::new().file("big", &p);
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("\"big\""), "{err}");
        assert!(err.contains("614400 bytes"), "{err}");
    }

    #[test]
    fn sources_and_unknown_ids() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, b"file-secret").unwrap();
        let s = Secrets::new()
            .file("f", &p)
            .bytes("b", b"raw".to_vec())
            .env("e", "BUILDKIT_RS_TEST_UNSET_VAR");
        assert_eq!(
            s.read("f").unwrap().unwrap(),
            Bytes::from_static(b"file-secret")
        );
        assert_eq!(s.read("b").unwrap().unwrap(), Bytes::from_static(b"raw"));
        assert!(s.read("nope").unwrap().is_none());
        let err = s.read("e").unwrap_err().to_string();
        assert!(
            err.contains("BUILDKIT_RS_TEST_UNSET_VAR is not set"),
            "{err}"
        );
    }

    #[test]
    fn check_leaves_a_pipe_unread_for_the_daemon() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let s = Secrets::new().file("piped", &p);
        // Would block forever if it opened the pipe (no writer yet).
        s.check().unwrap();
        let writer = std::thread::spawn({
            let p = p.clone();
            move || std::fs::write(p, b"one-time").unwrap()
        });
        assert_eq!(
            s.read("piped").unwrap().unwrap(),
            Bytes::from_static(b"one-time")
        );
        writer.join().unwrap();

        let s = Secrets::new().file("dir", d.path());
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }
}
