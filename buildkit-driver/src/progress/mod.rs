//! Build progress as typed events, from `Control.Status` or from the REST `/build`
//! stream's `moby.buildkit.trace` aux messages, and printers for them: [`Plain`] (what
//! `docker buildx build --progress=plain` prints), [`Tty`] (a live compact view) and
//! [`RawJson`] (one JSON object per event).

mod plain;
mod rawjson;
mod tty;

use base64::Engine;
use buildkit_proto::moby::buildkit::v1::StatusResponse;
use bytes::Bytes;
use prost::Message;
use time::OffsetDateTime;

pub use plain::Plain;
pub use rawjson::{RawJson, to_json};
pub use tty::Tty;

/// One thing that happened in a build.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A step (vertex) is known, changed state, or finished.
    Vertex(Vertex),
    /// Progress of a task inside a step (a transfer, an extraction).
    Status(Status),
    /// Output of a step (`stream` 1 is stdout, 2 stderr).
    Log(Log),
    /// A warning about a step (e.g. a Dockerfile lint).
    Warning(Warning),
}

/// A vertex: one step of the build graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Vertex {
    /// Its digest (identity).
    pub digest: String,
    /// Digests of its inputs.
    pub inputs: Vec<String>,
    /// Its name, e.g. `[builder 2/3] RUN make`.
    pub name: String,
    /// Where it is.
    pub state: VertexState,
    /// The progress group it belongs to, if any (grouped steps print as one).
    pub group: Option<String>,
}

/// The state of a [`Vertex`].
#[derive(Debug, Clone, PartialEq)]
pub enum VertexState {
    /// Known but not started.
    Pending,
    /// Running since this time.
    Started(OffsetDateTime),
    /// Finished.
    Completed {
        /// When it started.
        started: Option<OffsetDateTime>,
        /// When it finished.
        completed: OffsetDateTime,
    },
    /// Taken from the cache.
    Cached,
    /// Failed (or was cancelled).
    Errored {
        /// The daemon's message.
        error: String,
        /// When it started.
        started: Option<OffsetDateTime>,
        /// When it stopped.
        completed: Option<OffsetDateTime>,
    },
}

/// Progress of a task inside a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The step.
    pub vertex: String,
    /// The task's id (e.g. `transferring context:` or a layer digest).
    pub id: String,
    /// A display name.
    pub name: String,
    /// Units done.
    pub current: i64,
    /// Units in all (0 when unknown).
    pub total: i64,
    /// When this update was made.
    pub timestamp: Option<OffsetDateTime>,
    /// When the task started.
    pub started: Option<OffsetDateTime>,
    /// When the task finished.
    pub completed: Option<OffsetDateTime>,
}

/// Output of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// The step.
    pub vertex: String,
    /// 1 for stdout, 2 for stderr.
    pub stream: i64,
    /// The bytes, as written (lines may be split across logs).
    pub data: Bytes,
    /// When they were written.
    pub timestamp: Option<OffsetDateTime>,
}

/// A warning about a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// The step.
    pub vertex: String,
    /// Severity (higher is more severe).
    pub level: i64,
    /// One-line summary.
    pub short: String,
    /// Longer explanation, line by line.
    pub detail: Vec<String>,
    /// A link for more.
    pub url: String,
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<OffsetDateTime> {
    let t = t.as_ref()?;
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// The events in one `StatusResponse`, in the order vertexes, statuses, logs, warnings.
pub fn events_from_status(resp: StatusResponse) -> Vec<Event> {
    let mut out = Vec::with_capacity(
        resp.vertexes.len() + resp.statuses.len() + resp.logs.len() + resp.warnings.len(),
    );
    for v in resp.vertexes {
        let started = ts(&v.started);
        let completed = ts(&v.completed);
        let state = if !v.error.is_empty() {
            VertexState::Errored {
                error: v.error,
                started,
                completed,
            }
        } else if v.cached {
            VertexState::Cached
        } else if let Some(c) = completed {
            VertexState::Completed {
                started,
                completed: c,
            }
        } else if let Some(s) = started {
            VertexState::Started(s)
        } else {
            VertexState::Pending
        };
        out.push(Event::Vertex(Vertex {
            digest: v.digest,
            inputs: v.inputs,
            name: v.name,
            state,
            group: v.progress_group.map(|g| g.id).filter(|g| !g.is_empty()),
        }));
    }
    for s in resp.statuses {
        out.push(Event::Status(Status {
            vertex: s.vertex,
            id: s.id,
            name: s.name,
            current: s.current,
            total: s.total,
            timestamp: ts(&s.timestamp),
            started: ts(&s.started),
            completed: ts(&s.completed),
        }));
    }
    for l in resp.logs {
        out.push(Event::Log(Log {
            vertex: l.vertex,
            stream: l.stream,
            data: l.msg,
            timestamp: ts(&l.timestamp),
        }));
    }
    for w in resp.warnings {
        out.push(Event::Warning(Warning {
            vertex: w.vertex,
            level: w.level,
            short: String::from_utf8_lossy(&w.short).into_owned(),
            detail: w
                .detail
                .iter()
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .collect(),
            url: w.url,
        }));
    }
    out
}

/// The id of the REST `/build` aux messages that carry BuildKit status.
pub const AUX_TRACE_ID: &str = "moby.buildkit.trace";

/// Decodes a REST `/build` progress message: `Some(events)` for a
/// `moby.buildkit.trace` aux message (base64 of a `StatusResponse`), `None` otherwise.
pub fn events_from_aux(message: &serde_json::Value) -> Option<Result<Vec<Event>, String>> {
    if message.get("id").and_then(|v| v.as_str()) != Some(AUX_TRACE_ID) {
        return None;
    }
    let aux = message.get("aux")?.as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(aux)
            .map_err(|e| format!("BuildKit trace is not base64: {e}"))
            .and_then(|raw| {
                StatusResponse::decode(raw.as_slice())
                    .map_err(|e| format!("BuildKit trace does not decode: {e}"))
            })
            .map(events_from_status),
    )
}

/// Decodes a REST `/build` progress message from `docker-api`: `Some(events)` for
/// BuildKit's trace, `None` for anything else (an image id, a classic builder line).
pub fn events_from_message(
    message: &docker_api::ProgressMessage,
) -> Option<Result<Vec<Event>, String>> {
    if message.id.as_deref() != Some(AUX_TRACE_ID) {
        return None;
    }
    let aux = message.aux.clone()?;
    events_from_aux(&serde_json::json!({ "id": AUX_TRACE_ID, "aux": aux }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildkit_proto::moby::buildkit::v1::{Vertex as PbVertex, VertexLog};

    #[test]
    fn aux_trace_decodes_into_events() {
        let resp = StatusResponse {
            vertexes: vec![PbVertex {
                digest: "sha256:a".into(),
                name: "[1/2] FROM busybox".into(),
                cached: true,
                ..Default::default()
            }],
            logs: vec![VertexLog {
                vertex: "sha256:a".into(),
                stream: 1,
                msg: Bytes::from_static(b"hello\n"),
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
            }],
            ..Default::default()
        };
        let aux = base64::engine::general_purpose::STANDARD.encode(resp.encode_to_vec());
        let msg = serde_json::json!({"id": "moby.buildkit.trace", "aux": aux});
        let events = events_from_aux(&msg).unwrap().unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Event::Vertex(v) if v.state == VertexState::Cached));
        match &events[1] {
            Event::Log(l) => {
                assert_eq!(&l.data[..], b"hello\n");
                assert_eq!(
                    l.timestamp.unwrap().unix_timestamp_nanos(),
                    1_700_000_000_000_000_005
                );
            }
            e => panic!("{e:?}"),
        }
        assert!(events_from_aux(&serde_json::json!({"stream": "Step 1/2"})).is_none());
        assert!(
            events_from_aux(&serde_json::json!({"id": "moby.buildkit.trace", "aux": "!!"}))
                .unwrap()
                .is_err()
        );
    }
}
