//! Docker's stdout/stderr multiplexing: when a container or exec has no TTY, its
//! output arrives as frames of an 8-byte header (`[stream, 0, 0, 0, len_be32]`) and
//! `len` payload bytes. With a TTY the stream is raw.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::Stream;

use crate::error::Result;

/// Which stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamKind {
    /// Standard input (echoed back by some daemons).
    Stdin,
    /// Standard output. Raw (TTY) streams are reported as stdout.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of container or exec output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where it came from.
    pub kind: StreamKind,
    /// The bytes, exactly as written by the process.
    pub data: Bytes,
}

/// What [`Demuxer::next`] found.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Payload bytes of a stream.
    Data(StreamKind, Bytes),
    /// More input is needed.
    NeedMore,
}

/// The frame parser, a small state machine fed with whatever bytes have arrived.
#[derive(Debug, Default)]
pub(crate) struct Demuxer {
    header: [u8; 8],
    have: usize,
    stream: u8,
    remaining: usize,
    /// Bytes of a daemon error frame (stream 3) collected so far.
    system: Vec<u8>,
}

impl Demuxer {
    /// Takes bytes from the front of `input` and returns the next payload piece.
    /// A daemon error frame (stream 3) becomes an `io::Error` with its text.
    pub(crate) fn next(&mut self, input: &mut Bytes) -> io::Result<Piece> {
        loop {
            if self.remaining == 0 {
                if input.is_empty() {
                    return Ok(Piece::NeedMore);
                }
                let n = (8 - self.have).min(input.len());
                self.header[self.have..self.have + n].copy_from_slice(&input[..n]);
                self.have += n;
                input.advance(n);
                if self.have < 8 {
                    return Ok(Piece::NeedMore);
                }
                self.have = 0;
                let h = self.header;
                if h[0] > 3 || h[1..4] != [0, 0, 0] {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "invalid multiplexed stream header {h:02x?}: is this a TTY stream?"
                        ),
                    ));
                }
                self.stream = h[0];
                self.remaining = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
                if self.stream == 3 {
                    self.system.clear();
                    if self.remaining == 0 {
                        return Err(self.system_error());
                    }
                }
                continue;
            }
            if input.is_empty() {
                return Ok(Piece::NeedMore);
            }
            let n = self.remaining.min(input.len());
            let data = input.split_to(n);
            self.remaining -= n;
            let kind = match self.stream {
                0 => StreamKind::Stdin,
                1 => StreamKind::Stdout,
                2 => StreamKind::Stderr,
                _ => {
                    self.system.extend_from_slice(&data);
                    if self.remaining == 0 {
                        return Err(self.system_error());
                    }
                    continue;
                }
            };
            return Ok(Piece::Data(kind, data));
        }
    }

    fn system_error(&self) -> io::Error {
        let text = String::from_utf8_lossy(&self.system);
        io::Error::other(format!("daemon error: {}", text.trim()))
    }

    /// True when the input ended cleanly, between frames.
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// A stream of [`Output`] from a multiplexed or raw byte stream.
pub(crate) struct OutputStream<S> {
    inner: S,
    demux: Option<Demuxer>,
    buf: Bytes,
    done: bool,
    endpoint: String,
}

impl<S> OutputStream<S> {
    /// `multiplexed` is false for TTY streams.
    pub(crate) fn new(inner: S, multiplexed: bool, endpoint: String) -> Self {
        Self {
            inner,
            demux: multiplexed.then(Demuxer::default),
            buf: Bytes::new(),
            done: false,
            endpoint,
        }
    }

    fn error(&self, e: io::Error) -> crate::Error {
        crate::Error::new(
            crate::ErrorKind::Stream(e.to_string()),
            self.endpoint.clone(),
        )
    }
}

impl<S> Stream for OutputStream<S>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    type Item = Result<Output>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match &mut this.demux {
                None => {
                    if !this.buf.is_empty() {
                        let data = std::mem::take(&mut this.buf);
                        return Poll::Ready(Some(Ok(Output {
                            kind: StreamKind::Stdout,
                            data,
                        })));
                    }
                }
                Some(d) => match d.next(&mut this.buf) {
                    Ok(Piece::Data(kind, data)) => {
                        return Poll::Ready(Some(Ok(Output { kind, data })));
                    }
                    Ok(Piece::NeedMore) => {}
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(this.error(e))));
                    }
                },
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(chunk)) => this.buf = chunk,
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    if this.demux.as_ref().is_some_and(|d| !d.at_boundary()) {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the output stream ended in the middle of a frame",
                        );
                        return Poll::Ready(Some(Err(this.error(e))));
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

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    async fn collect(chunks: Vec<Vec<u8>>, mux: bool) -> Vec<Result<Output>> {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        OutputStream::new(s, mux, "test".into()).collect().await
    }

    fn joined(out: &[Result<Output>], kind: StreamKind) -> Vec<u8> {
        out.iter()
            .filter_map(|o| o.as_ref().ok())
            .filter(|o| o.kind == kind)
            .flat_map(|o| o.data.to_vec())
            .collect()
    }

    #[tokio::test]
    async fn splits_frames_at_every_byte_boundary() {
        let mut all = frame(1, b"hello ");
        all.extend(frame(2, b"oops"));
        all.extend(frame(1, b""));
        all.extend(frame(1, b"world"));
        for cut in 0..all.len() {
            for cut2 in cut..all.len() {
                let chunks = vec![
                    all[..cut].to_vec(),
                    all[cut..cut2].to_vec(),
                    all[cut2..].to_vec(),
                ];
                let out = collect(chunks, true).await;
                assert!(out.iter().all(|o| o.is_ok()), "cut {cut}/{cut2}");
                assert_eq!(joined(&out, StreamKind::Stdout), b"hello world");
                assert_eq!(joined(&out, StreamKind::Stderr), b"oops");
            }
        }
    }

    #[tokio::test]
    async fn raw_streams_pass_through_as_stdout() {
        let out = collect(vec![b"\x01abc".to_vec(), b"def".to_vec()], false).await;
        assert_eq!(joined(&out, StreamKind::Stdout), b"\x01abcdef");
    }

    #[tokio::test]
    async fn truncated_frames_and_daemon_errors_are_errors() {
        let mut f = frame(1, b"hello");
        f.truncate(9);
        let out = collect(vec![f], true).await;
        let err = out.last().unwrap().as_ref().unwrap_err();
        assert!(err.to_string().contains("middle of a frame"), "{err}");

        let mut f = frame(1, b"ok");
        f.extend(frame(3, b"container gone\n"));
        let out = collect(vec![f], true).await;
        assert_eq!(joined(&out, StreamKind::Stdout), b"ok");
        let err = out.last().unwrap().as_ref().unwrap_err();
        assert!(
            err.to_string().contains("daemon error: container gone"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_is_reported_not_misread() {
        let out = collect(vec![b"hello world".to_vec()], true).await;
        let err = out[0].as_ref().unwrap_err();
        assert!(err.to_string().contains("invalid multiplexed"), "{err}");
    }
}
