//! One JSON object per event, one per line: for machines.

use std::io::Write;

use base64::Engine;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Event, VertexState};

fn t(ts: Option<OffsetDateTime>) -> Value {
    ts.and_then(|t| t.format(&Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// The JSON form of an event: `{"vertex": {...}}`, `{"status": {...}}`,
/// `{"log": {...}}` (data base64) or `{"warning": {...}}`; times are RFC 3339.
pub fn to_json(event: &Event) -> Value {
    match event {
        Event::Vertex(v) => {
            let (state, started, completed, error) = match &v.state {
                VertexState::Pending => ("pending", None, None, None),
                VertexState::Started(s) => ("started", Some(*s), None, None),
                VertexState::Completed { started, completed } => {
                    ("completed", *started, Some(*completed), None)
                }
                VertexState::Cached => ("cached", None, None, None),
                VertexState::Errored {
                    error,
                    started,
                    completed,
                } => ("errored", *started, *completed, Some(error.clone())),
            };
            json!({"vertex": {
                "digest": v.digest, "inputs": v.inputs, "name": v.name, "state": state,
                "started": t(started), "completed": t(completed), "error": error, "group": v.group,
            }})
        }
        Event::Status(s) => json!({"status": {
            "vertex": s.vertex, "id": s.id, "name": s.name, "current": s.current, "total": s.total,
            "timestamp": t(s.timestamp), "started": t(s.started), "completed": t(s.completed),
        }}),
        Event::Log(l) => json!({"log": {
            "vertex": l.vertex, "stream": l.stream,
            "data": base64::engine::general_purpose::STANDARD.encode(&l.data),
            "timestamp": t(l.timestamp),
        }}),
        Event::Warning(w) => json!({"warning": {
            "vertex": w.vertex, "level": w.level, "short": w.short, "detail": w.detail, "url": w.url,
        }}),
    }
}

/// Prints each event as a line of JSON ([`to_json`]).
pub struct RawJson<W: Write> {
    w: W,
}

impl<W: Write> RawJson<W> {
    /// A printer writing to `w`.
    pub fn new(w: W) -> Self {
        Self { w }
    }

    /// Prints one event.
    pub fn handle(&mut self, event: &Event) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.w, &to_json(event))?;
        writeln!(self.w)
    }

    /// Prints every event of `events`; returns the writer.
    pub async fn print<S: Stream<Item = Event>>(mut self, events: S) -> std::io::Result<W> {
        futures_util::pin_mut!(events);
        while let Some(e) = events.next().await {
            self.handle(&e)?;
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Log, Vertex};

    #[test]
    fn lines_are_json() {
        let mut p = RawJson::new(Vec::new());
        p.handle(&Event::Vertex(Vertex {
            digest: "sha256:a".into(),
            inputs: vec![],
            name: "[1/1] RUN x".into(),
            state: VertexState::Cached,
            group: None,
        }))
        .unwrap();
        p.handle(&Event::Log(Log {
            vertex: "sha256:a".into(),
            stream: 2,
            data: bytes::Bytes::from_static(b"hi\n"),
            timestamp: None,
        }))
        .unwrap();
        let out = String::from_utf8(p.w).unwrap();
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["vertex"]["state"], "cached");
        assert_eq!(lines[1]["log"]["data"], "aGkK");
        assert_eq!(lines[1]["log"]["stream"], 2);
    }
}
