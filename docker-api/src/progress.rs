//! The JSON progress messages of build, pull, push, load and import.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// One progress message. Error messages never appear here: the stream yields them
/// as an [`Error`] whose [`message`](Error::message) is the daemon's text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ProgressMessage {
    /// The subject: a layer id for pull/push, or an aux payload's kind
    /// (`moby.buildkit.trace`, `moby.image.id`).
    #[serde(default)]
    pub id: Option<String>,
    /// A status line (`Pushing`, `Pull complete`, `Loaded image: ...`).
    #[serde(default)]
    pub status: Option<String>,
    /// Build output text (the classic builder's step lines, `RUN` output).
    #[serde(default)]
    pub stream: Option<String>,
    /// A rendered progress bar.
    #[serde(default)]
    pub progress: Option<String>,
    /// Bytes done and total, for transfers.
    #[serde(default, rename = "progressDetail")]
    pub progress_detail: Option<ProgressDetail>,
    /// A structured payload, kept exactly as sent: an image id (`{"ID":..}`), a push
    /// result (`{"Tag","Digest","Size"}`), or BuildKit's base64 status trace.
    #[serde(default)]
    pub aux: Option<serde_json::Value>,
}

impl ProgressMessage {
    /// Decodes the aux payload as `T` ([`crate::images::BuildAux`],
    /// [`crate::images::PushAux`], ...), if there is one of that shape.
    pub fn aux_as<T: DeserializeOwned>(&self) -> Option<T> {
        self.aux
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// Transfer progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(default)]
    pub current: Option<i64>,
    /// Bytes in all.
    #[serde(default)]
    pub total: Option<i64>,
}

/// The wire form, with the error fields that become [`Error`]s.
#[derive(Deserialize)]
struct Wire {
    #[serde(flatten)]
    message: ProgressMessage,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
}

/// A stream of [`ProgressMessage`]s. It ends after the first error, which carries the
/// daemon's message.
pub struct ProgressStream {
    inner: BoxStream<'static, Result<Wire>>,
    endpoint: String,
    done: bool,
}

impl std::fmt::Debug for ProgressStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStream")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ProgressStream {
    pub(crate) fn new(docker: &crate::Docker, resp: http::Response<hyper::body::Incoming>) -> Self {
        Self {
            inner: docker.json_stream::<Wire>(resp).boxed(),
            endpoint: docker.endpoint().to_string(),
            done: false,
        }
    }

    /// Reads the stream to its end and returns the messages that carried an `aux`
    /// payload (image id, push digest, ...), or the first error.
    pub async fn finish(mut self) -> Result<Vec<ProgressMessage>> {
        let mut aux = Vec::new();
        while let Some(m) = self.next().await {
            let m = m?;
            if m.aux.is_some() {
                aux.push(m);
            }
        }
        Ok(aux)
    }
}

impl Stream for ProgressStream {
    type Item = Result<ProgressMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match ready!(this.inner.as_mut().poll_next(cx)) {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(w)) => match (w.error, w.error_detail.and_then(|d| d.message)) {
                (None, None) => Some(Ok(w.message)),
                (e, d) => {
                    let message = d.or(e).unwrap_or_default();
                    Some(Err(Error::new(ErrorKind::Stream(message), &*this.endpoint)))
                }
            },
        };
        if !matches!(item, Some(Ok(_))) {
            this.done = true;
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_aux_and_id_intact() {
        let w: Wire =
            serde_json::from_str(r#"{"id":"moby.buildkit.trace","aux":"Cm0KR3NoYTI1Ng=="}"#)
                .unwrap();
        assert_eq!(w.message.id.as_deref(), Some("moby.buildkit.trace"));
        assert_eq!(w.message.aux, Some(serde_json::json!("Cm0KR3NoYTI1Ng==")));
        assert!(w.error.is_none());
        let w: Wire =
            serde_json::from_str(r#"{"errorDetail":{"code":1,"message":"boom"},"error":"boom"}"#)
                .unwrap();
        assert_eq!(w.error_detail.unwrap().message.as_deref(), Some("boom"));
    }
}
