//! Request bodies (any byte stream) and decoders for streamed responses.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use serde::de::DeserializeOwned;
use tokio::io::AsyncRead;

use crate::error::BoxError;

/// A request body: empty, in memory, or streamed from any byte stream or reader.
pub struct Body(UnsyncBoxBody<Bytes, BoxError>);

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Self(Empty::new().map_err(|never| match never {}).boxed_unsync())
    }

    /// A body held in memory.
    pub fn bytes(data: impl Into<Bytes>) -> Self {
        Self(
            Full::new(data.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }

    /// A JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::bytes(serde_json::to_vec(value)?))
    }

    /// A body streamed from chunks; nothing is buffered beyond the chunk in flight.
    pub fn stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let frames = stream.map_ok(Frame::data).map_err(Into::into);
        Self(StreamBody::new(frames).boxed_unsync())
    }

    /// A body streamed from an async reader in 64 KiB chunks.
    pub fn reader<R>(reader: R) -> Self
    where
        R: AsyncRead + Send + 'static,
    {
        Self::stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            64 * 1024,
        ))
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self::bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Self::bytes(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::bytes(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// The longest single JSON message a stream may carry before it is treated as broken.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Decodes a byte stream of concatenated JSON values (Docker's progress streams) into
/// typed messages, as they arrive.
pub struct JsonStream<S, T> {
    inner: S,
    buf: BytesMut,
    ready: VecDeque<Result<T, JsonStreamError>>,
    done: bool,
    /// Without a newline in a chunk, the buffer is parsed again only once it has
    /// reached this length (doubling), so a large message arriving in small
    /// chunks costs linear, not quadratic, parsing.
    next_attempt: usize,
    _t: PhantomData<fn() -> T>,
}

impl<S, T> JsonStream<S, T> {
    /// Wraps a stream of byte chunks.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            ready: VecDeque::new(),
            done: false,
            next_attempt: 0,
            _t: PhantomData,
        }
    }
}

// Buffered values are never pinned: only the inner stream is polled in place.
impl<S: Unpin, T> Unpin for JsonStream<S, T> {}

/// Why a [`JsonStream`] stopped.
#[derive(Debug)]
pub enum JsonStreamError {
    /// The underlying byte stream failed.
    Transport(BoxError),
    /// A message was not valid JSON of the expected shape.
    Decode(serde_json::Error),
    /// The stream ended in the middle of a message, or a message was too large.
    Truncated(String),
}

impl std::fmt::Display for JsonStreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "reading the response stream: {e}"),
            Self::Decode(e) => write!(f, "decoding a streamed message: {e}"),
            Self::Truncated(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for JsonStreamError {}

impl<S, T> JsonStream<S, T>
where
    T: DeserializeOwned,
{
    /// Moves every complete value out of the buffer.
    fn drain(&mut self) -> Result<(), JsonStreamError> {
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<T>();
        let mut consumed = 0;
        loop {
            match it.next() {
                Some(Ok(v)) => {
                    consumed = it.byte_offset();
                    self.ready.push_back(Ok(v));
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(JsonStreamError::Decode(e)),
                None => {
                    consumed = it.byte_offset();
                    break;
                }
            }
        }
        self.buf.advance(consumed);
        self.next_attempt = (self.buf.len() * 2).min(MAX_MESSAGE + 1);
        if self.buf.len() > MAX_MESSAGE {
            return Err(JsonStreamError::Truncated(format!(
                "a streamed message exceeded {MAX_MESSAGE} bytes"
            )));
        }
        Ok(())
    }
}

impl<S, T, E> Stream for JsonStream<S, T>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
    T: DeserializeOwned,
{
    type Item = Result<T, JsonStreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(v) = this.ready.pop_front() {
                return Poll::Ready(Some(v));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    this.buf.extend_from_slice(&chunk);
                    // Docker ends every message with a newline.
                    let worth_it = chunk.contains(&b'\n') || this.buf.len() >= this.next_attempt;
                    if worth_it && let Err(e) = this.drain() {
                        // After the values decoded before it.
                        this.done = true;
                        this.ready.push_back(Err(e));
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(JsonStreamError::Transport(e.into()))));
                }
                None => {
                    this.done = true;
                    // What a last chunk without a newline completed, then whether
                    // anything was left unfinished.
                    if let Err(e) = this.drain() {
                        this.ready.push_back(Err(e));
                    } else if this.buf.iter().any(|b| !b.is_ascii_whitespace()) {
                        this.ready.push_back(Err(JsonStreamError::Truncated(
                            "the response stream ended in the middle of a message".into(),
                        )));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn splits_values_across_chunks() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"{\"a\":1}\r\n{\"a\"")),
            Ok(Bytes::from_static(b":2}{\"a\":3}")),
            Ok(Bytes::from_static(b"\n")),
        ];
        let s = JsonStream::<_, serde_json::Value>::new(futures_util::stream::iter(chunks));
        let got: Vec<_> = s.map(|r| r.unwrap()["a"].as_i64().unwrap()).collect().await;
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn truncated_stream_is_an_error() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"{\"a\":1}{\"a\""))];
        let mut s = JsonStream::<_, serde_json::Value>::new(futures_util::stream::iter(chunks));
        assert!(s.next().await.unwrap().is_ok());
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("middle of a message"), "{err}");
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn a_large_message_in_small_chunks_and_a_last_one_without_newline() {
        let big = format!("{{\"a\":1,\"pad\":\"{}\"}}", "x".repeat(100_000));
        let mut bytes = big.into_bytes();
        bytes.extend_from_slice(b"\r\n{\"a\":2}{\"a\":3}");
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let s = JsonStream::<_, serde_json::Value>::new(futures_util::stream::iter(chunks));
        let got: Vec<_> = s.map(|r| r.unwrap()["a"].as_i64().unwrap()).collect().await;
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn values_then_a_truncated_tail_in_the_last_chunk() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"a\":")),
            Ok(Bytes::from_static(b"2}{\"a\"")),
        ];
        let mut s = JsonStream::<_, serde_json::Value>::new(futures_util::stream::iter(chunks));
        assert_eq!(s.next().await.unwrap().unwrap()["a"], 1);
        assert_eq!(s.next().await.unwrap().unwrap()["a"], 2);
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("middle of a message"), "{err}");
        assert!(s.next().await.is_none());
    }
}
