//! The plain printer: numbered steps, their output and their outcome, as
//! `docker buildx build --progress=plain` prints them.

use std::collections::{HashMap, VecDeque};
use std::io::Write;

use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;

use super::{Event, Log, Status, Vertex, VertexState, Warning};

/// Lines of a failed step's output repeated in the summary.
const ERROR_LOG_LINES: usize = 10;

#[derive(Default)]
struct Vtx {
    index: usize,
    name: String,
    started: Option<OffsetDateTime>,
    completed: Option<OffsetDateTime>,
    done: bool,
    cached: bool,
    error: Option<String>,
    /// The last log line is unfinished (no newline yet).
    partial: bool,
    recent: VecDeque<String>,
    statuses: HashMap<String, (i64, Option<OffsetDateTime>)>,
    first_seen: usize,
}

/// Prints events as numbered lines (`#3 [2/2] RUN make`, `#3 0.512 output`,
/// `#3 DONE 0.6s`, `#4 CACHED`, `#5 ERROR: ...`), then a summary of failed steps.
pub struct Plain<W: Write> {
    w: W,
    vtx: HashMap<String, Vtx>,
    seen: usize,
    next_index: usize,
    current: Option<String>,
    printed_any: bool,
}

impl<W: Write> Plain<W> {
    /// A printer writing to `w` (usually `std::io::stderr()`).
    pub fn new(w: W) -> Self {
        Self {
            w,
            vtx: HashMap::new(),
            seen: 0,
            next_index: 0,
            current: None,
            printed_any: false,
        }
    }

    /// Prints every event of `events`, then the summary; returns the writer.
    pub async fn print<S>(mut self, events: S) -> std::io::Result<W>
    where
        S: Stream<Item = Event>,
    {
        futures_util::pin_mut!(events);
        while let Some(e) = events.next().await {
            self.handle(&e)?;
        }
        self.finish()?;
        Ok(self.w)
    }

    /// Prints one event.
    pub fn handle(&mut self, event: &Event) -> std::io::Result<()> {
        match event {
            Event::Vertex(v) => self.vertex(v),
            Event::Status(s) => self.status(s),
            Event::Log(l) => self.log(l),
            Event::Warning(w) => self.warning(w),
        }
    }

    /// Prints the summary of failed steps (their last output lines).
    pub fn finish(&mut self) -> std::io::Result<()> {
        let mut failed: Vec<&Vtx> = self
            .vtx
            .values()
            .filter(|v| v.error.as_deref().is_some_and(|e| !is_canceled(e)))
            .collect();
        failed.sort_by_key(|v| v.first_seen);
        for v in failed {
            writeln!(self.w, "------")?;
            writeln!(self.w, " > {}:", v.name)?;
            for l in &v.recent {
                writeln!(self.w, "{l}")?;
            }
            writeln!(self.w, "------")?;
        }
        self.w.flush()
    }

    fn entry(&mut self, digest: &str) -> &mut Vtx {
        let seen = &mut self.seen;
        self.vtx.entry(digest.to_string()).or_insert_with(|| {
            *seen += 1;
            Vtx {
                first_seen: *seen,
                ..Default::default()
            }
        })
    }

    /// Makes `digest` the step being printed, with its header line.
    fn switch_to(&mut self, digest: &str) -> std::io::Result<()> {
        if self.current.as_deref() == Some(digest) {
            return Ok(());
        }
        if let Some(old) = self.current.take()
            && let Some(o) = self.vtx.get_mut(&old)
        {
            if o.partial {
                writeln!(self.w)?;
                o.partial = false;
            }
            if !o.done {
                writeln!(self.w, "#{} ...", o.index)?;
            }
        }
        if self.printed_any {
            writeln!(self.w)?;
        }
        self.printed_any = true;
        let next = &mut self.next_index;
        let v = self.vtx.get_mut(digest).expect("entry exists");
        if v.index == 0 {
            *next += 1;
            v.index = *next;
        }
        writeln!(self.w, "#{} {}", v.index, v.name)?;
        self.current = Some(digest.to_string());
        Ok(())
    }

    fn vertex(&mut self, ev: &Vertex) -> std::io::Result<()> {
        let v = self.entry(&ev.digest);
        if !ev.name.is_empty() {
            v.name = ev.name.clone();
        }
        if v.done {
            return Ok(());
        }
        match &ev.state {
            VertexState::Pending => Ok(()),
            VertexState::Started(t) => {
                if v.started.is_none() {
                    v.started = Some(*t);
                    return self.switch_to(&ev.digest);
                }
                Ok(())
            }
            VertexState::Completed { started, completed } => {
                v.started = v.started.or(*started);
                v.completed = Some(*completed);
                self.complete(&ev.digest)
            }
            VertexState::Cached => {
                v.cached = true;
                self.complete(&ev.digest)
            }
            VertexState::Errored {
                error,
                started,
                completed,
            } => {
                v.started = v.started.or(*started);
                v.completed = *completed;
                v.error = Some(error.clone());
                self.complete(&ev.digest)
            }
        }
    }

    fn complete(&mut self, digest: &str) -> std::io::Result<()> {
        self.switch_to(digest)?;
        let v = self.vtx.get_mut(digest).expect("entry exists");
        if v.partial {
            writeln!(self.w)?;
            v.partial = false;
        }
        v.done = true;
        match &v.error {
            Some(e) if is_canceled(e) => writeln!(self.w, "#{} CANCELED", v.index)?,
            Some(e) => writeln!(self.w, "#{} ERROR: {e}", v.index)?,
            None if v.cached => writeln!(self.w, "#{} CACHED", v.index)?,
            None => {
                let secs = match (v.started, v.completed) {
                    (Some(s), Some(c)) => (c - s).as_seconds_f64().max(0.0),
                    _ => 0.0,
                };
                writeln!(self.w, "#{} DONE {secs:.1}s", v.index)?;
            }
        }
        self.current = None;
        Ok(())
    }

    fn status(&mut self, s: &Status) -> std::io::Result<()> {
        if !self.vtx.contains_key(&s.vertex) {
            return Ok(());
        }
        let v = self.vtx.get_mut(&s.vertex).expect("checked");
        // Throttle: unfinished updates print when 5% or 5 s have passed.
        if s.completed.is_none()
            && let Some((last, last_ts)) = v.statuses.get(&s.id)
        {
            let delta = if s.total > 0 {
                (s.current - last) as f64 / s.total as f64
            } else {
                0.0
            };
            let dt = match (s.timestamp, last_ts) {
                (Some(a), Some(b)) => (a - *b).as_seconds_f64(),
                _ => 0.0,
            };
            if delta < 0.05 && dt < 5.0 {
                return Ok(());
            }
        }
        v.statuses.insert(s.id.clone(), (s.current, s.timestamp));
        self.switch_to(&s.vertex)?;
        let v = self.vtx.get_mut(&s.vertex).expect("checked");
        let mut line = format!("#{} {}", v.index, s.id);
        if s.total != 0 {
            line.push_str(&format!(
                " {} / {}",
                human_bytes(s.current),
                human_bytes(s.total)
            ));
        } else if s.current != 0 {
            line.push_str(&format!(" {}", human_bytes(s.current)));
        }
        if let Some(start) = s.started {
            let end = s.completed.or(s.timestamp).unwrap_or(start);
            let secs = (end - start).as_seconds_f64();
            if secs > 0.01 {
                line.push_str(&format!(" {secs:.1}s"));
            }
        }
        if s.completed.is_some() {
            line.push_str(" done");
        }
        writeln!(self.w, "{line}")
    }

    fn log(&mut self, l: &Log) -> std::io::Result<()> {
        if !self.vtx.contains_key(&l.vertex) {
            return Ok(());
        }
        self.switch_to(&l.vertex)?;
        let v = self.vtx.get_mut(&l.vertex).expect("checked");
        let text = String::from_utf8_lossy(&l.data);
        let mut parts: Vec<&str> = text.split('\n').collect();
        // A trailing newline leaves an empty last part: the line is complete.
        let ends_complete = parts.last() == Some(&"");
        if ends_complete {
            parts.pop();
        }
        let secs = match (l.timestamp, v.started) {
            (Some(t), Some(s)) => (t - s).as_seconds_f64().max(0.0),
            _ => 0.0,
        };
        let stamp = if secs < 10.0 {
            format!("{secs:.3}")
        } else if secs < 100.0 {
            format!("{secs:.2}")
        } else {
            format!("{secs:.1}")
        };
        for (i, part) in parts.iter().enumerate() {
            if i == 0 && v.partial {
                // Continues the unfinished line already on screen.
                write!(self.w, "{part}")?;
                if let Some(last) = v.recent.back_mut() {
                    last.push_str(part);
                }
            } else {
                write!(self.w, "#{} {stamp} {part}", v.index)?;
                v.recent.push_back(format!("{stamp} {part}"));
                if v.recent.len() > ERROR_LOG_LINES {
                    v.recent.pop_front();
                }
            }
            let last = i == parts.len() - 1;
            if !last || ends_complete {
                writeln!(self.w)?;
                v.partial = false;
            } else {
                v.partial = true;
            }
        }
        Ok(())
    }

    fn warning(&mut self, w: &Warning) -> std::io::Result<()> {
        if !self.vtx.contains_key(&w.vertex) {
            return writeln!(self.w, "WARN: {}", w.short);
        }
        self.switch_to(&w.vertex)?;
        let v = self.vtx.get_mut(&w.vertex).expect("checked");
        writeln!(self.w, "#{} WARN: {}", v.index, w.short)
    }
}

fn is_canceled(e: &str) -> bool {
    e.ends_with("context canceled")
}

/// Sizes as BuildKit prints them: `512B`, `2.11kB`, `4.50MB`.
pub(crate) fn human_bytes(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn at(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(
            1_700_000_000_000_000_000 + i128::from(ms) * 1_000_000,
        )
        .unwrap()
    }

    fn vtx(d: &str, name: &str, state: VertexState) -> Event {
        Event::Vertex(Vertex {
            digest: d.into(),
            inputs: vec![],
            name: name.into(),
            state,
            group: None,
        })
    }

    fn log(d: &str, ms: i64, data: &'static str) -> Event {
        Event::Log(Log {
            vertex: d.into(),
            stream: 1,
            data: Bytes::from_static(data.as_bytes()),
            timestamp: Some(at(ms)),
        })
    }

    #[test]
    fn prints_like_buildx_plain() {
        let events = vec![
            vtx(
                "a",
                "[internal] load build definition from Dockerfile",
                VertexState::Started(at(0)),
            ),
            Event::Status(Status {
                vertex: "a".into(),
                id: "transferring dockerfile:".into(),
                name: String::new(),
                current: 2110,
                total: 0,
                timestamp: Some(at(20)),
                started: Some(at(0)),
                completed: Some(at(20)),
            }),
            vtx(
                "a",
                "[internal] load build definition from Dockerfile",
                VertexState::Completed {
                    started: Some(at(0)),
                    completed: at(30),
                },
            ),
            vtx(
                "b",
                "[1/2] FROM docker.io/library/busybox:local",
                VertexState::Cached,
            ),
            vtx(
                "c",
                "[2/2] RUN echo hello && echo world",
                VertexState::Started(at(100)),
            ),
            log("c", 612, "hello\nwor"),
            log("c", 700, "ld\n"),
            vtx(
                "c",
                "[2/2] RUN echo hello && echo world",
                VertexState::Completed {
                    started: Some(at(100)),
                    completed: at(800),
                },
            ),
            vtx("d", "[3/3] RUN exit 3", VertexState::Started(at(900))),
            log("d", 950, "about to fail\n"),
            vtx(
                "d",
                "[3/3] RUN exit 3",
                VertexState::Errored {
                    error:
                        "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
                            .into(),
                    started: Some(at(900)),
                    completed: Some(at(1000)),
                },
            ),
        ];
        let mut p = Plain::new(Vec::new());
        for e in &events {
            p.handle(e).unwrap();
        }
        p.finish().unwrap();
        let out = String::from_utf8(p.w).unwrap();
        let expected = "\
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 2.11kB 0.0s done
#1 DONE 0.0s

#2 [1/2] FROM docker.io/library/busybox:local
#2 CACHED

#3 [2/2] RUN echo hello && echo world
#3 0.512 hello
#3 0.512 world
#3 DONE 0.7s

#4 [3/3] RUN exit 3
#4 0.050 about to fail
#4 ERROR: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3
------
 > [3/3] RUN exit 3:
0.050 about to fail
------
";
        for (i, (got, want)) in out.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        assert_eq!(out.lines().count(), expected.lines().count(), "{out}");
    }

    #[test]
    fn interleaved_steps_get_continuation_markers() {
        let mut p = Plain::new(Vec::new());
        for e in [
            vtx("a", "[a 1/1] RUN x", VertexState::Started(at(0))),
            log("a", 100, "from a\n"),
            vtx("b", "[b 1/1] RUN y", VertexState::Started(at(50))),
            log("b", 200, "from b\n"),
            log("a", 300, "more a\n"),
        ] {
            p.handle(&e).unwrap();
        }
        let out = String::from_utf8(p.w).unwrap();
        assert_eq!(
            out,
            "#1 [a 1/1] RUN x\n#1 0.100 from a\n#1 ...\n\n#2 [b 1/1] RUN y\n#2 0.150 from b\n#2 ...\n\n#1 [a 1/1] RUN x\n#1 0.300 more a\n"
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(2110), "2.11kB");
        assert_eq!(human_bytes(4_500_000), "4.50MB");
    }
}
