//! A live, compact view for terminals: one line per step, redrawn in place.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;

use super::plain::human_bytes;
use super::{Event, VertexState};

/// Output lines of a running step shown under it.
const TAIL_LINES: usize = 6;

struct Step {
    name: String,
    state: VertexState,
    tail: Vec<String>,
    partial: String,
    statuses: Vec<(String, String)>,
}

/// Redraws a block like `[+] Building 2.3s (4/7)` followed by ` => [2/2] RUN make  1.2s`
/// lines at most every 100 ms, with the last output lines of running steps; the final
/// frame stays on screen.
pub struct Tty<W: Write> {
    w: W,
    steps: Vec<String>,
    by_digest: HashMap<String, Step>,
    drawn_lines: usize,
    started: Instant,
    width: usize,
}

impl<W: Write> Tty<W> {
    /// A printer drawing on `w`, a terminal `$COLUMNS` wide (80 when unset).
    pub fn new(w: W) -> Self {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|c: &usize| *c >= 40)
            .unwrap_or(80);
        Self {
            w,
            steps: Vec::new(),
            by_digest: HashMap::new(),
            drawn_lines: 0,
            started: Instant::now(),
            width,
        }
    }

    /// Takes one event into the view (drawn on the next [`Tty::draw`]).
    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::Vertex(v) => {
                let step = self
                    .by_digest
                    .entry(v.digest.clone())
                    .or_insert_with(|| Step {
                        name: v.name.clone(),
                        state: VertexState::Pending,
                        tail: Vec::new(),
                        partial: String::new(),
                        statuses: Vec::new(),
                    });
                if !matches!(v.state, VertexState::Pending) {
                    if matches!(step.state, VertexState::Pending) {
                        self.steps.push(v.digest.clone());
                    }
                    step.state = v.state.clone();
                }
            }
            Event::Log(l) => {
                if let Some(step) = self.by_digest.get_mut(&l.vertex) {
                    step.partial.push_str(&String::from_utf8_lossy(&l.data));
                    while let Some(i) = step.partial.find('\n') {
                        let line: String = step.partial.drain(..=i).collect();
                        step.tail.push(line.trim_end().to_string());
                    }
                    let len = step.tail.len();
                    if len > TAIL_LINES {
                        step.tail.drain(..len - TAIL_LINES);
                    }
                }
            }
            Event::Status(s) => {
                if let Some(step) = self.by_digest.get_mut(&s.vertex) {
                    let mut text = s.id.clone();
                    if s.total != 0 {
                        text.push_str(&format!(
                            " {} / {}",
                            human_bytes(s.current),
                            human_bytes(s.total)
                        ));
                    } else if s.current != 0 {
                        text.push_str(&format!(" {}", human_bytes(s.current)));
                    }
                    if s.completed.is_some() {
                        text.push_str(" done");
                    }
                    match step.statuses.iter_mut().find(|(id, _)| *id == s.id) {
                        Some(e) => e.1 = text,
                        None => step.statuses.push((s.id.clone(), text)),
                    }
                }
            }
            Event::Warning(_) => {}
        }
    }

    fn fit(&self, left: &str, right: &str) -> String {
        let room = self.width.saturating_sub(right.len() + 1);
        let mut l: String = left.chars().take(room).collect();
        let pad = room.saturating_sub(l.chars().count());
        l.push_str(&" ".repeat(pad));
        format!("{l} {right}")
    }

    fn frame(&self, finished: bool) -> Vec<String> {
        let done = self
            .steps
            .iter()
            .filter(|d| {
                !matches!(
                    self.by_digest[*d].state,
                    VertexState::Pending | VertexState::Started(_)
                )
            })
            .count();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({}/{}){}",
            self.started.elapsed().as_secs_f64(),
            done,
            self.steps.len(),
            if finished { " FINISHED" } else { "" }
        )];
        let now = OffsetDateTime::now_utc();
        for d in &self.steps {
            let s = &self.by_digest[d];
            let (prefix, time) = match &s.state {
                VertexState::Cached => ("=> CACHED ", String::from("0.0s")),
                VertexState::Completed { started, completed } => (
                    "=> ",
                    format!(
                        "{:.1}s",
                        started
                            .map(|st| (*completed - st).as_seconds_f64())
                            .unwrap_or(0.0)
                    ),
                ),
                VertexState::Errored { .. } => ("=> ERROR ", String::new()),
                VertexState::Started(st) => (
                    "=> ",
                    format!("{:.1}s", (now - *st).as_seconds_f64().max(0.0)),
                ),
                VertexState::Pending => ("=> ", String::new()),
            };
            lines.push(self.fit(&format!(" {prefix}{}", s.name), &time));
            let running = matches!(s.state, VertexState::Started(_));
            for (_, st) in &s.statuses {
                lines.push(self.fit(&format!(" => => {st}"), ""));
            }
            if running || matches!(s.state, VertexState::Errored { .. }) {
                for t in &s.tail {
                    lines.push(self.fit(&format!(" => => # {t}"), ""));
                }
            }
        }
        lines
    }

    /// Redraws the view in place.
    pub fn draw(&mut self, finished: bool) -> std::io::Result<()> {
        let lines = self.frame(finished);
        if self.drawn_lines > 0 {
            write!(self.w, "\x1b[{}A", self.drawn_lines)?;
        }
        for l in &lines {
            writeln!(self.w, "\x1b[2K{}", l.trim_end())?;
        }
        // Clear what a longer previous frame left below, and come back up.
        let extra = self.drawn_lines.saturating_sub(lines.len());
        for _ in 0..extra {
            writeln!(self.w, "\x1b[2K")?;
        }
        if extra > 0 {
            write!(self.w, "\x1b[{extra}A")?;
        }
        self.drawn_lines = lines.len();
        self.w.flush()
    }

    /// Draws `events` as they come (at most every 100 ms, and every 500 ms while idle so
    /// running times advance), then the final frame; returns the writer.
    pub async fn print<S: Stream<Item = Event>>(mut self, events: S) -> std::io::Result<W> {
        futures_util::pin_mut!(events);
        let mut last = Instant::now() - Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(e) => {
                        self.handle(&e);
                        if last.elapsed() >= Duration::from_millis(100) {
                            self.draw(false)?;
                            last = Instant::now();
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.draw(false)?;
                    last = Instant::now();
                }
            }
        }
        self.draw(true)?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Vertex;

    #[test]
    fn draws_and_redraws_in_place() {
        let mut p = Tty::new(Vec::new());
        p.handle(&Event::Vertex(Vertex {
            digest: "a".into(),
            inputs: vec![],
            name: "[1/2] FROM busybox".into(),
            state: VertexState::Cached,
            group: None,
        }));
        p.draw(false).unwrap();
        p.handle(&Event::Vertex(Vertex {
            digest: "b".into(),
            inputs: vec![],
            name: "[2/2] RUN make".into(),
            state: VertexState::Started(OffsetDateTime::now_utc()),
            group: None,
        }));
        p.draw(true).unwrap();
        let out = String::from_utf8(p.w).unwrap();
        assert!(out.contains(" => CACHED [1/2] FROM busybox"), "{out}");
        assert!(
            out.contains("\x1b[2A"),
            "the second frame moves up over the first: {out:?}"
        );
        assert!(out.contains("(1/2) FINISHED"), "{out}");
    }
}
