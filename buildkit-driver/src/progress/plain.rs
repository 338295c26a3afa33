//! The plain printer: numbered steps, their output and their outcome, as
//! `docker buildx build --progress=plain` prints them.
//!
//! Like buildx, it takes in updates and prints what changed on a short tick, so that a
//! step's late status lines land before its `DONE` rather than after it.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;

use super::{Event, Log, Status, Vertex, VertexState, Warning};

/// Lines of a failed step's output repeated in the summary.
const ERROR_LOG_LINES: usize = 10;

/// How often accumulated updates are printed.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Vtx {
    index: usize,
    name: String,
    started: Option<OffsetDateTime>,
    completed: Option<OffsetDateTime>,
    finished: bool,
    cached: bool,
    error: Option<String>,
    /// Final line printed since the last change.
    done_printed: bool,
    /// Complete output lines not printed yet (already stamped).
    pending_logs: Vec<String>,
    /// An unfinished output line.
    partial: String,
    partial_stamp: Option<String>,
    recent: VecDeque<String>,
    /// Status ids in first-seen order, their latest value, and what was last printed.
    status_order: Vec<String>,
    statuses: HashMap<String, Status>,
    status_printed: HashMap<String, (i64, Option<OffsetDateTime>)>,
    status_dirty: Vec<String>,
    warnings: Vec<String>,
    first_seen: usize,
}

impl Vtx {
    fn stamp(&self, at: Option<OffsetDateTime>) -> String {
        let secs = match (at, self.started) {
            (Some(t), Some(s)) => (t - s).as_seconds_f64().max(0.0),
            _ => 0.0,
        };
        if secs < 10.0 {
            format!("{secs:.3}")
        } else if secs < 100.0 {
            format!("{secs:.2}")
        } else {
            format!("{secs:.1}")
        }
    }

    fn remember(&mut self, line: String) {
        self.recent.push_back(line);
        if self.recent.len() > ERROR_LOG_LINES {
            self.recent.pop_front();
        }
    }
}

/// Prints events as numbered lines (`#3 [2/2] RUN make`, `#3 0.512 output`,
/// `#3 DONE 0.6s`, `#4 CACHED`, `#5 ERROR: ...`), then a summary of failed steps.
///
/// [`Plain::print`] consumes a stream and prints on a 100 ms tick; for manual use call
/// [`Plain::handle`] for each event and [`Plain::flush`] to print.
pub struct Plain<W: Write> {
    w: W,
    vtx: HashMap<String, Vtx>,
    seen: usize,
    next_index: usize,
    current: Option<String>,
    printed_any: bool,
    dirty: Vec<String>,
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
            dirty: Vec::new(),
        }
    }

    /// Prints `events` as they come (coalesced on a 100 ms tick), then the summary;
    /// returns the writer.
    pub async fn print<S>(mut self, events: S) -> std::io::Result<W>
    where
        S: Stream<Item = Event>,
    {
        futures_util::pin_mut!(events);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(e) => self.handle(&e),
                    None => break,
                },
                _ = tick.tick() => self.flush()?,
            }
        }
        self.flush()?;
        self.finish()?;
        Ok(self.w)
    }

    /// The writer.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// Takes in one event; nothing is printed until [`Plain::flush`].
    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::Vertex(v) => self.vertex(v),
            Event::Status(s) => self.status(s),
            Event::Log(l) => self.log(l),
            Event::Warning(w) => self.warning(w),
        }
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

    fn touch(&mut self, digest: &str) {
        if !self.dirty.iter().any(|d| d == digest) {
            self.dirty.push(digest.to_string());
        }
    }

    fn vertex(&mut self, ev: &Vertex) {
        let v = self.entry(&ev.digest);
        if !ev.name.is_empty() {
            v.name = ev.name.clone();
        }
        match &ev.state {
            VertexState::Pending => return,
            VertexState::Started(t) => {
                if v.started.is_some() && !v.finished {
                    return;
                }
                v.started = Some(*t);
                v.finished = false;
                v.done_printed = false;
                v.completed = None;
            }
            VertexState::Completed { started, completed } => {
                v.started = started.or(v.started);
                v.completed = Some(*completed);
                v.finished = true;
                v.done_printed = false;
            }
            VertexState::Cached => {
                v.cached = true;
                v.finished = true;
                v.done_printed = false;
            }
            VertexState::Errored {
                error,
                started,
                completed,
            } => {
                v.started = started.or(v.started);
                v.completed = *completed;
                v.error = Some(error.clone());
                v.finished = true;
                v.done_printed = false;
            }
        }
        let d = ev.digest.clone();
        self.touch(&d);
    }

    fn status(&mut self, s: &Status) {
        let Some(v) = self.vtx.get_mut(&s.vertex) else {
            return;
        };
        if !v.statuses.contains_key(&s.id) {
            v.status_order.push(s.id.clone());
        }
        v.statuses.insert(s.id.clone(), s.clone());
        if !v.status_dirty.contains(&s.id) {
            v.status_dirty.push(s.id.clone());
        }
        let d = s.vertex.clone();
        self.touch(&d);
    }

    fn log(&mut self, l: &Log) {
        let Some(v) = self.vtx.get_mut(&l.vertex) else {
            return;
        };
        let stamp = v.stamp(l.timestamp);
        let text = String::from_utf8_lossy(&l.data);
        let mut rest: &str = &text;
        while let Some(i) = rest.find('\n') {
            let piece = &rest[..i];
            let line = match v.partial_stamp.take() {
                Some(first) => {
                    let mut full = std::mem::take(&mut v.partial);
                    full.push_str(piece);
                    format!("{first} {full}")
                }
                None => format!("{stamp} {piece}"),
            };
            v.pending_logs.push(line.clone());
            v.remember(line);
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            if v.partial_stamp.is_none() {
                v.partial_stamp = Some(stamp);
            }
            v.partial.push_str(rest);
        }
        let d = l.vertex.clone();
        self.touch(&d);
    }

    fn warning(&mut self, w: &Warning) {
        match self.vtx.get_mut(&w.vertex) {
            Some(v) => {
                v.warnings.push(w.short.clone());
                let d = w.vertex.clone();
                self.touch(&d);
            }
            None => {
                let _ = writeln!(self.w, "WARN: {}", w.short);
            }
        }
    }

    /// Prints what changed since the last flush: finished steps first, in the order
    /// they finished, then the others.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        let (mut finished, rest): (Vec<String>, Vec<String>) = dirty
            .into_iter()
            .filter(|d| self.vtx[d].started.is_some() || self.vtx[d].finished)
            .partition(|d| self.vtx[d].finished);
        finished.sort_by_key(|d| {
            let v = &self.vtx[d];
            (
                v.completed
                    .map(|c| c.unix_timestamp_nanos())
                    .unwrap_or(i128::MIN),
                v.first_seen,
            )
        });
        for d in finished.iter().chain(rest.iter()) {
            self.print_vtx(d)?;
        }
        self.w.flush()
    }

    /// Makes `digest` the step being printed, with its header line.
    fn switch_to(&mut self, digest: &str) -> std::io::Result<()> {
        if self.current.as_deref() == Some(digest) {
            return Ok(());
        }
        if let Some(old) = self.current.take()
            && let Some(o) = self.vtx.get(&old)
            && !o.finished
        {
            writeln!(self.w, "#{} ...", o.index)?;
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

    fn print_vtx(&mut self, digest: &str) -> std::io::Result<()> {
        let has_news = {
            let v = &self.vtx[digest];
            !v.done_printed
                || !v.pending_logs.is_empty()
                || !v.warnings.is_empty()
                || !v.status_dirty.is_empty()
        };
        if !has_news {
            return Ok(());
        }
        self.switch_to(digest)?;
        let v = self.vtx.get_mut(digest).expect("entry exists");
        let n = v.index;
        for id in std::mem::take(&mut v.status_dirty) {
            let s = v.statuses[&id].clone();
            // Unfinished updates print when 5% or 5 s have passed.
            if s.completed.is_none()
                && let Some((last, last_ts)) = v.status_printed.get(&id)
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
                    continue;
                }
            }
            v.status_printed
                .insert(id.clone(), (s.current, s.timestamp));
            let mut line = format!("#{n} {}", s.id);
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
            writeln!(self.w, "{line}")?;
        }
        for w in std::mem::take(&mut v.warnings) {
            writeln!(self.w, "#{n} WARN: {w}")?;
        }
        for l in std::mem::take(&mut v.pending_logs) {
            writeln!(self.w, "#{n} {l}")?;
        }
        if v.finished && !v.done_printed {
            if let Some(stamp) = v.partial_stamp.take() {
                let line = format!("{stamp} {}", std::mem::take(&mut v.partial));
                writeln!(self.w, "#{n} {line}")?;
                v.remember(line);
            }
            v.done_printed = true;
            match &v.error {
                Some(e) if is_canceled(e) => writeln!(self.w, "#{n} CANCELED")?,
                Some(e) => writeln!(self.w, "#{n} ERROR: {e}")?,
                None if v.cached => writeln!(self.w, "#{n} CACHED")?,
                None => {
                    let secs = match (v.started, v.completed) {
                        (Some(s), Some(c)) => (c - s).as_seconds_f64().max(0.0),
                        _ => 0.0,
                    };
                    writeln!(self.w, "#{n} DONE {secs:.1}s")?;
                }
            }
            self.current = None;
        }
        Ok(())
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

    fn status(d: &str, id: &str, current: i64, done_ms: Option<i64>) -> Event {
        Event::Status(Status {
            vertex: d.into(),
            id: id.into(),
            name: String::new(),
            current,
            total: 0,
            timestamp: Some(at(20)),
            started: Some(at(0)),
            completed: done_ms.map(at),
        })
    }

    /// Feeds `batches` of events, flushing after each batch (one tick each).
    fn render(batches: &[Vec<Event>]) -> String {
        let mut p = Plain::new(Vec::new());
        for b in batches {
            for e in b {
                p.handle(e);
            }
            p.flush().unwrap();
        }
        p.finish().unwrap();
        String::from_utf8(p.into_inner()).unwrap()
    }

    fn assert_lines(out: &str, expected: &str) {
        for (i, (got, want)) in out.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "line {} of\n{out}", i + 1);
        }
        assert_eq!(out.lines().count(), expected.lines().count(), "{out}");
    }

    #[test]
    fn prints_like_buildx_plain() {
        let load = "[internal] load build definition from Dockerfile";
        let run = "[2/2] RUN echo hello && echo world";
        let out = render(&[
            vec![vtx("a", load, VertexState::Started(at(0)))],
            // The completion arrives before the step's last status, in the same tick:
            // the status still prints before DONE.
            vec![
                vtx(
                    "a",
                    load,
                    VertexState::Completed {
                        started: Some(at(0)),
                        completed: at(30),
                    },
                ),
                status("a", "transferring dockerfile:", 2110, Some(20)),
            ],
            vec![
                vtx(
                    "b",
                    "[1/2] FROM docker.io/library/busybox:local",
                    VertexState::Cached,
                ),
                vtx("c", run, VertexState::Started(at(100))),
            ],
            vec![log("c", 612, "hello\nwor")],
            vec![log("c", 700, "ld\n")],
            vec![vtx(
                "c",
                run,
                VertexState::Completed {
                    started: Some(at(100)),
                    completed: at(800),
                },
            )],
            vec![
                vtx("d", "[3/3] RUN exit 3", VertexState::Started(at(900))),
                log("d", 950, "about to fail\n"),
            ],
            vec![vtx(
                "d",
                "[3/3] RUN exit 3",
                VertexState::Errored {
                    error:
                        "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
                            .into(),
                    started: Some(at(900)),
                    completed: Some(at(1000)),
                },
            )],
        ]);
        assert_lines(
            &out,
            "\
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
",
        );
    }

    #[test]
    fn interleaved_steps_get_continuation_markers() {
        let out = render(&[
            vec![
                vtx("a", "[a 1/1] RUN x", VertexState::Started(at(0))),
                log("a", 100, "from a\n"),
            ],
            vec![
                vtx("b", "[b 1/1] RUN y", VertexState::Started(at(50))),
                log("b", 200, "from b\n"),
            ],
            vec![log("a", 300, "more a\n")],
        ]);
        assert_lines(
            &out,
            "#1 [a 1/1] RUN x\n#1 0.100 from a\n#1 ...\n\n#2 [b 1/1] RUN y\n#2 0.150 from b\n#2 ...\n\n#1 [a 1/1] RUN x\n#1 0.300 more a\n",
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(2110), "2.11kB");
        assert_eq!(human_bytes(4_500_000), "4.50MB");
    }
}
