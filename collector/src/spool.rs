//! The collector's spool: every report is appended (and synced) to a checksummed log
//! on disk before it counts as queued, and removed only once the aggregator has
//! acknowledged it. Sequence numbers, the epoch and the count of dropped reports live
//! in a small state file, so they survive restarts. The spool is bounded in bytes:
//! when full, the oldest segment goes, and its unacknowledged reports are counted as
//! dropped; the count travels in every later report so the aggregator knows.
//!
//! Layout of the folder:
//! - `state`: `epoch`, `last_seq`, `acked_seq`, `dropped`, one `key=value` a line,
//!   replaced atomically (write, sync, rename);
//! - `seg-<first seq>.log`: records of `[len u32 LE][crc32 u32 LE][Report protobuf]`.
//!
//! A record cut short by a crash fails its length or checksum and is cut off on open.

use connwatch_shared::wire::Report;
use prost::Message;
use rand::Rng;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use thiserror::Error;
use tokio::sync::watch;

/// Why the spool failed.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error(
        "spool {path}: {error}; check that the folder exists, is writable by the collector and has free space"
    )]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The state file is unreadable.
    #[error(
        "spool state {path} is damaged ({why}); move the spool folder aside to start a new sequence"
    )]
    BadState {
        /// The state file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |error| SpoolError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The largest segment file; small enough that dropping one loses little.
const MAX_SEGMENT: u64 = 1 << 20;
/// The largest record accepted when reading back, to reject garbage lengths.
const MAX_RECORD: u32 = 4 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    epoch: u64,
    last_seq: u64,
    acked_seq: u64,
    dropped: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    last_seq: u64,
    bytes: u64,
}

struct Inner {
    state: State,
    queue: VecDeque<Report>,
    segments: VecDeque<Segment>,
    current: Option<File>,
    total_bytes: u64,
}

/// A durable, bounded queue of unacknowledged reports.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    newest: watch::Sender<u64>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state_path = dir.join("state");
        let mut state = read_state(&state_path)?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
            })
            .collect();
        names.sort();
        let mut queue = VecDeque::new();
        let mut segments = VecDeque::new();
        let mut total_bytes = 0;
        for path in names {
            let (reports, bytes) = read_segment(&path)?;
            let last_seq = reports.last().map_or(0, |r| r.seq);
            for r in reports {
                if state.epoch == 0 {
                    state.epoch = r.epoch;
                }
                state.last_seq = state.last_seq.max(r.seq);
                if r.seq > state.acked_seq {
                    queue.push_back(r);
                }
            }
            total_bytes += bytes;
            segments.push_back(Segment {
                path,
                last_seq,
                bytes,
            });
        }
        if state.epoch == 0 {
            state.epoch = rand::rng().random_range(1..u64::MAX);
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(2 * 1024),
            segment_bytes: MAX_SEGMENT.min(max_bytes / 4).max(1024),
            inner: Mutex::new(Inner {
                state,
                queue,
                segments,
                current: None,
                total_bytes,
            }),
            newest: watch::channel(state.last_seq).0,
        };
        {
            let mut inner = spool.lock();
            spool.write_state(&inner.state)?;
            spool.remove_acked_segments(&mut inner)?;
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self, s: &State) -> Result<(), SpoolError> {
        let path = self.dir.join("state");
        let tmp = self.dir.join("state.tmp");
        let text = format!(
            "epoch={}\nlast_seq={}\nacked_seq={}\ndropped={}\n",
            s.epoch, s.last_seq, s.acked_seq, s.dropped
        );
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }

    /// Numbers the report, writes it durably, and queues it. Returns its sequence
    /// number.
    pub fn push(&self, mut report: Report) -> Result<u64, SpoolError> {
        let seq = {
            let mut inner = self.lock();
            let seq = inner.state.last_seq + 1;
            report.epoch = inner.state.epoch;
            report.seq = seq;
            report.dropped_reports = inner.state.dropped;
            let payload = report.encode_to_vec();
            let mut record = Vec::with_capacity(payload.len() + 8);
            record.extend_from_slice(
                &u32::try_from(payload.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            );
            record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            record.extend_from_slice(&payload);
            let needs_new = inner
                .segments
                .back()
                .is_none_or(|s| s.bytes + record.len() as u64 > self.segment_bytes)
                || inner.current.is_none();
            if needs_new {
                let path = self.dir.join(format!("seg-{seq:020}.log"));
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                inner.current = Some(file);
                inner.segments.push_back(Segment {
                    path,
                    last_seq: 0,
                    bytes: 0,
                });
            }
            let path = inner
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            if let Some(file) = inner.current.as_mut() {
                file.write_all(&record).map_err(io(&path))?;
                file.sync_data().map_err(io(&path))?;
            }
            if let Some(seg) = inner.segments.back_mut() {
                seg.bytes += record.len() as u64;
                seg.last_seq = seq;
            }
            inner.total_bytes += record.len() as u64;
            inner.state.last_seq = seq;
            inner.queue.push_back(report);
            // The state file is the collector's ledger: what it assigned, what was
            // acknowledged, what it dropped. Keep it exact at every step.
            self.write_state(&inner.state)?;
            self.enforce_bound(&mut inner)?;
            seq
        };
        self.newest.send_replace(seq);
        Ok(seq)
    }

    /// Drops whole oldest segments while the spool is over its bound.
    fn enforce_bound(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        let mut changed = false;
        while inner.total_bytes > self.max_bytes && inner.segments.len() > 1 {
            let Some(seg) = inner.segments.pop_front() else {
                break;
            };
            let lost = inner
                .queue
                .iter()
                .take_while(|r| r.seq <= seg.last_seq)
                .count();
            inner.queue.drain(..lost);
            inner.state.dropped += lost as u64;
            inner.state.acked_seq = inner.state.acked_seq.max(seg.last_seq);
            inner.total_bytes -= seg.bytes;
            std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            tracing::warn!(dropped = lost, "spool full: dropped the oldest reports");
            changed = true;
        }
        if changed {
            self.write_state(&inner.state)?;
        }
        Ok(())
    }

    /// Forgets every report up to and including `seq` (acks arrive in order), and
    /// deletes segments that hold nothing unacknowledged.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        if seq <= inner.state.acked_seq {
            return Ok(());
        }
        while inner.queue.front().is_some_and(|r| r.seq <= seq) {
            inner.queue.pop_front();
        }
        inner.state.acked_seq = seq.min(inner.state.last_seq);
        self.write_state(&inner.state)?;
        self.remove_acked_segments(&mut inner)
    }

    fn remove_acked_segments(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        // Keep the segment being written to; it is reused until it fills up.
        while inner.segments.len() > 1
            && inner
                .segments
                .front()
                .is_some_and(|s| s.last_seq <= inner.state.acked_seq)
        {
            if let Some(seg) = inner.segments.pop_front() {
                inner.total_bytes -= seg.bytes;
                std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            }
        }
        Ok(())
    }

    /// The queued reports with a sequence number above `seq`, in order.
    pub fn after(&self, seq: u64) -> Vec<Report> {
        self.lock()
            .queue
            .iter()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect()
    }

    /// The first queued report with a sequence number above `seq`.
    pub fn next_after(&self, seq: u64) -> Option<Report> {
        let inner = self.lock();
        let i = inner.queue.partition_point(|r| r.seq <= seq);
        inner.queue.get(i).cloned()
    }

    /// How many reports were dropped because the spool was full, ever.
    pub fn dropped(&self) -> u64 {
        self.lock().state.dropped
    }

    /// The epoch of this spool's sequence numbers.
    pub fn epoch(&self) -> u64 {
        self.lock().state.epoch
    }

    /// How many reports wait for an ack.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing waits for an ack.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// A receiver that wakes when a report is queued.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

fn read_state(path: &Path) -> Result<State, SpoolError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut s = State::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |why: &str| SpoolError::BadState {
            path: path.to_path_buf(),
            why: format!("{why}: `{line}`"),
        };
        let (k, v) = line.split_once('=').ok_or_else(|| bad("not key=value"))?;
        let v: u64 = v.trim().parse().map_err(|_| bad("not a number"))?;
        match k.trim() {
            "epoch" => s.epoch = v,
            "last_seq" => s.last_seq = v,
            "acked_seq" => s.acked_seq = v,
            "dropped" => s.dropped = v,
            _ => return Err(bad("unknown key")),
        }
    }
    Ok(s)
}

/// Reads a segment's records; a torn or damaged tail is cut off.
fn read_segment(path: &Path) -> Result<(Vec<Report>, u64), SpoolError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(path))?;
    let mut reports = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = at + 8 + len as usize;
        let Some(payload) = bytes.get(at + 8..end).filter(|_| len <= MAX_RECORD) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match Report::decode(payload) {
            Ok(r) => reports.push(r),
            Err(_) => break,
        }
        at = end;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), kept = reports.len(), cut = bytes.len() - at, "spool segment had a damaged tail (a crash mid-write); it was cut off");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(at as u64).map_err(io(path))?;
        f.sync_data().map_err(io(path))?;
    }
    Ok((reports, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            group: "g".into(),
            ..Default::default()
        }
    }

    fn seqs(s: &Spool) -> Vec<u64> {
        s.after(0).iter().map(|r| r.seq).collect()
    }

    #[test]
    fn sequence_epoch_and_unacked_reports_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let epoch = {
            let s = Spool::open(dir.path(), 1 << 20).expect("open");
            for _ in 0..5 {
                s.push(report()).expect("push");
            }
            s.ack(2).expect("ack");
            s.epoch()
        };
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(s.epoch(), epoch);
        assert_eq!(seqs(&s), [3, 4, 5]);
        assert_eq!(s.push(report()).expect("push"), 6);
        s.ack(6).expect("ack");
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert!(s.is_empty());
        assert_eq!(
            s.push(report()).expect("push"),
            7,
            "seq continues after everything was acked"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Spool::open(dir.path(), 1 << 20).expect("open");
            for _ in 0..3 {
                s.push(report()).expect("push");
            }
        }
        let seg = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("segment");
        let len = std::fs::metadata(&seg).expect("meta").len();
        // Half of a fourth record, as a kill mid-write leaves it.
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9])
            .expect("write");
        drop(f);
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(seqs(&s), [1, 2, 3]);
        assert_eq!(std::fs::metadata(&seg).expect("meta").len(), len);
        assert_eq!(s.push(report()).expect("push"), 4);
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(seqs(&s), [1, 2, 3, 4]);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 8 * 1024).expect("open");
        let big = Report {
            group: "g".into(),
            collector_version: "x".repeat(900),
            ..Default::default()
        };
        for _ in 0..40 {
            s.push(big.clone()).expect("push");
        }
        assert!(s.bytes() <= 8 * 1024, "{} bytes", s.bytes());
        let dropped = s.dropped();
        assert!(dropped > 0);
        assert_eq!(
            s.len() as u64 + dropped,
            40,
            "every report is either queued or counted"
        );
        let kept = seqs(&s);
        assert_eq!(kept.last(), Some(&40));
        assert!(
            kept.windows(2).all(|w| w[1] == w[0] + 1),
            "the newest survive, in order"
        );
        let last = s.after(39);
        assert_eq!(
            last[0].dropped_reports,
            s.dropped(),
            "reports carry the drop count"
        );
        let reopened = Spool::open(dir.path(), 8 * 1024).expect("reopen");
        assert_eq!(reopened.dropped(), dropped);
    }
}
