//! Logs followed for their readers (the dashboard's live transcript): one buffer per run, fed
//! by whoever follows the run's log (the Kubernetes runtime's pod log streams), read by offset
//! as often as readers like without asking the source again. A buffer nobody read for a while
//! is dropped, and its feeder told to stop. No I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::LogRead;

/// The most of a run's log a buffer keeps; past it, the oldest lines are dropped (a reader then
/// reads from the start of what is kept, marked `restarted`).
pub const MAX_BYTES: usize = 8 << 20;
/// A buffer nobody read for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Buffer {
    text: String,
    /// Bytes dropped from the front so far: offsets are into the whole log.
    dropped: u64,
    /// The feeder is done: the run's containers have all ended.
    ended: bool,
    read_at: Instant,
}

/// One buffer per followed run.
#[derive(Debug, Clone, Default)]
pub struct Followed {
    runs: Arc<Mutex<HashMap<String, Buffer>>>,
}

/// What a reader's visit found.
#[derive(Debug, PartialEq, Eq)]
pub enum Visit {
    /// Read from the buffer.
    Read(LogRead),
    /// No buffer yet: the caller starts a feeder (one was registered for it now).
    Start,
}

impl Followed {
    /// A reader at byte `offset` of `run`'s log: what is new past it, or `Start` when nobody
    /// follows the run yet (a buffer is made at once, so one visit in many starts the feeder).
    pub fn visit(&self, run: &str, offset: u64) -> Visit {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        runs.retain(|_, b| now.duration_since(b.read_at) < IDLE);
        match runs.get_mut(run) {
            Some(b) => {
                b.read_at = now;
                Visit::Read(read(b, offset))
            }
            None => {
                runs.insert(
                    run.to_string(),
                    Buffer {
                        text: String::new(),
                        dropped: 0,
                        ended: false,
                        read_at: now,
                    },
                );
                Visit::Start
            }
        }
    }

    /// The feeder's text for `run`; false when nobody reads it any more (the feeder stops).
    pub fn push(&self, run: &str, text: &str) -> bool {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = runs.get_mut(run) else {
            return false;
        };
        b.text.push_str(text);
        if b.text.len() > MAX_BYTES {
            // Drop whole lines from the front, to at most MAX_BYTES.
            let excess = b.text.len() - MAX_BYTES;
            let cut = b.text[excess..]
                .find('\n')
                .map_or(b.text.len(), |i| excess + i + 1);
            b.text.drain(..cut);
            b.dropped += cut as u64;
        }
        true
    }

    /// The feeder is done with `run`: what it read is all there is.
    pub fn end(&self, run: &str) {
        if let Some(b) = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(run)
        {
            b.ended = true;
        }
    }

    /// Whether the feeder of `run` is done.
    pub fn ended(&self, run: &str) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run)
            .is_some_and(|b| b.ended)
    }

    /// Forgets `run`'s buffer (its feeder could not start): the next visit starts again.
    pub fn forget(&self, run: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run);
    }
}

/// The whole lines past `offset` (an offset into the whole log).
fn read(b: &Buffer, offset: u64) -> LogRead {
    if offset < b.dropped {
        let mut r = LogRead::past(b.text.clone(), 0);
        r.next += b.dropped;
        r.restarted = true;
        return r;
    }
    let mut r = LogRead::past(b.text.clone(), offset - b.dropped);
    r.next += b.dropped;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_one_buffer_read_in_whole_lines_by_offset() {
        let f = Followed::default();
        assert_eq!(f.visit("r", 0), Visit::Start);
        let read = |offset| match f.visit("r", offset) {
            Visit::Read(r) => r,
            Visit::Start => panic!("started twice"),
        };
        assert_eq!(read(0).text, "");
        assert!(f.push("r", "one\ntw"));
        let r = read(0);
        assert_eq!((r.text.as_str(), r.next, r.restarted), ("one\n", 4, false));
        assert!(f.push("r", "o\nthree\n"));
        let r = read(4);
        assert_eq!((r.text.as_str(), r.next), ("two\nthree\n", 14));
        assert_eq!(read(14).text, "");
        assert!(!f.ended("r"));
        f.end("r");
        assert!(f.ended("r"));
        assert!(!f.push("other", "x\n"), "nobody reads other");
    }

    #[test]
    fn a_buffer_past_its_limit_drops_whole_lines_from_the_front() {
        let f = Followed::default();
        f.visit("r", 0);
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..(MAX_BYTES / 1024 + 4) {
            f.push("r", &line);
        }
        let Visit::Read(r) = f.visit("r", 0) else {
            panic!()
        };
        assert!(r.restarted, "the start was dropped");
        assert!(r.text.len() <= MAX_BYTES && r.text.len() > MAX_BYTES - 2048);
        assert!(r.text.starts_with('x') && r.text.ends_with('\n'));
        let total = (MAX_BYTES / 1024 + 4) as u64 * 1024;
        assert_eq!(r.next, total, "offsets count the whole log");
        let Visit::Read(r) = f.visit("r", total) else {
            panic!()
        };
        assert_eq!((r.text.as_str(), r.restarted), ("", false));
    }
}
