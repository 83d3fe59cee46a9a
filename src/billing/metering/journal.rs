//! The usage journal: every settled request is appended here (one JSON line, one `write`) before
//! its response completes and before its hold is captured, so a usage event survives the gateway
//! being killed at any point: at start the journal is replayed into the batch writer, which is
//! idempotent (record id unique, posting key `usage:<id>`), so a crash between the database commit
//! and the journal's acknowledgement neither loses nor doubles a charge.
//!
//! Files live in `<data_dir>/usage-journal/`, one segment at a time (`<n>.log`), rotated at
//! [`SEGMENT_BYTES`]; a segment is deleted once every record in it is committed, and the active one
//! is truncated whenever the writer has caught up. A `LOCK` file (an OS file lock) keeps two
//! processes from sharing a journal. Each record gets a sequence number in append order, which is
//! also the order the writer receives them in.
//!
//! Appends are not fsynced one by one (that would cost a disk flush per request): the writer
//! fsyncs the active segment before each batch, so a process crash loses nothing and a power
//! loss at most the last batch interval.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

use crate::models::usage::UsageRecord;

/// A segment is rotated once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

struct Active {
    file: File,
    number: u64,
    bytes: u64,
}

struct State {
    active: Active,
    /// Closed segments: (number, sequence of their last record).
    closed: VecDeque<(u64, u64)>,
    /// Sequence of the last record appended.
    appended: u64,
    /// Highest sequence committed by the writer.
    committed: u64,
}

pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    _lock: File,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.log"))
}

fn open_segment(dir: &Path, number: u64) -> std::io::Result<Active> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, number))?;
    let bytes = file.metadata()?.len();
    Ok(Active {
        file,
        number,
        bytes,
    })
}

/// The records of one segment; a torn last line (the process died mid-write) is skipped.
fn read_segment(path: &Path) -> anyhow::Result<Vec<UsageRecord>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str(&line) {
            Ok(r) => records.push(r),
            Err(e) => tracing::warn!(error = %e, segment = %path.display(),
                "skipping an unreadable usage journal line (torn write)"),
        }
    }
    Ok(records)
}

impl Journal {
    /// Opens (creating) the journal in `dir`; returns it and the records a previous process left
    /// behind, in order, numbered 1…n (new appends continue after them).
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Vec<(u64, UsageRecord)>)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the usage journal {}", dir.display()))?;
        let lock = File::create(dir.join("LOCK"))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "the usage journal {} is in use by another process (give each replica its own data_dir)",
                dir.display()
            )
        })?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let (mut recovered, mut closed, mut seq) = (Vec::new(), VecDeque::new(), 0u64);
        for &n in &numbers {
            for record in read_segment(&segment_path(dir, n))? {
                seq += 1;
                recovered.push((seq, record));
            }
            closed.push_back((n, seq));
        }
        let next = numbers.last().map_or(1, |n| n + 1);
        let state = State {
            active: open_segment(dir, next)?,
            closed,
            appended: seq,
            committed: 0,
        };
        if !recovered.is_empty() {
            tracing::warn!(
                records = recovered.len(),
                "replaying usage a previous process journaled"
            );
        }
        let journal = Self {
            dir: dir.to_owned(),
            state: Mutex::new(state),
            _lock: lock,
        };
        Ok((journal, recovered))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `record` and hands it to `deliver` with its sequence number, under the journal's
    /// lock (so delivery order is append order). Returns the backlog (appended, not committed).
    pub fn append(
        &self,
        record: UsageRecord,
        deliver: impl FnOnce(u64, UsageRecord),
    ) -> anyhow::Result<u64> {
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        let mut state = self.state();
        if state.active.bytes >= SEGMENT_BYTES {
            let next = open_segment(&self.dir, state.active.number + 1)?;
            let old = std::mem::replace(&mut state.active, next);
            let last = state.appended;
            state.closed.push_back((old.number, last));
        }
        let written = state.active.file.write_all(&line);
        state.appended += 1;
        let seq = state.appended;
        deliver(seq, record);
        written.context("appending to the usage journal")?;
        state.active.bytes += line.len() as u64;
        Ok(state.appended.saturating_sub(state.committed))
    }

    /// Flushes the active segment to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        let file = self.state().active.file.try_clone()?;
        file.sync_data()
    }

    /// Every record up to `seq` is in the database: drops what no longer needs replaying.
    pub fn committed(&self, seq: u64) -> std::io::Result<()> {
        let mut state = self.state();
        state.committed = state.committed.max(seq);
        while let Some(&(number, last)) = state.closed.front() {
            if last > state.committed {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, number))?;
            state.closed.pop_front();
        }
        if state.closed.is_empty() && state.committed >= state.appended && state.active.bytes > 0 {
            state.active.file.set_len(0)?;
            state.active.bytes = 0;
        }
        Ok(())
    }

    /// Records appended but not yet committed.
    pub fn backlog(&self) -> u64 {
        let state = self.state();
        state.appended.saturating_sub(state.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, ApiKeyId, Nano, TenantId};

    fn record(n: u32) -> UsageRecord {
        let now = crate::db::now();
        UsageRecord {
            id: format!("event-{n}"),
            request_id: format!("req-{n}"),
            tenant_id: TenantId::generate(),
            account_id: AccountId::generate(),
            api_key_id: ApiKeyId::generate(),
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            estimated: false,
            status: "ok".into(),
            worker: None,
            upstream: None,
            miner_uid: None,
            started_at: now,
            ended_at: now,
            ttft_ms: None,
            latency_ms: 3,
            wholesale_cost_nano: None,
            charged_nano: Nano(5),
            tenant_charged_nano: Nano(1),
            usage_source: crate::domain::UsageSource::Upstream,
            prompt_nano_per_mtok: None,
            completion_nano_per_mtok: None,
            request_nano: None,
        }
    }

    fn ids(entries: &[(u64, UsageRecord)]) -> Vec<(u64, String)> {
        entries.iter().map(|(s, r)| (*s, r.id.clone())).collect()
    }

    #[test]
    fn uncommitted_records_survive_a_crash_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut delivered = Vec::new();
        {
            let (journal, recovered) = Journal::open(dir.path()).unwrap();
            assert!(recovered.is_empty());
            assert!(
                Journal::open(dir.path()).is_err(),
                "one process per journal"
            );
            for n in 1..=3 {
                journal
                    .append(record(n), |seq, r| delivered.push((seq, r)))
                    .unwrap();
            }
            journal.committed(3).unwrap();
            assert_eq!(journal.backlog(), 0);
            journal
                .append(record(4), |seq, r| delivered.push((seq, r)))
                .unwrap();
            journal
                .append(record(5), |seq, r| delivered.push((seq, r)))
                .unwrap();
            journal.committed(4).unwrap();
            assert_eq!(journal.backlog(), 1);
            // The process dies mid-write.
            let mut f = OpenOptions::new()
                .append(true)
                .open(segment_path(dir.path(), 1))
                .unwrap();
            f.write_all(b"{\"id\": \"event-6\", \"requ").unwrap();
        }
        assert_eq!(
            ids(&delivered),
            vec![
                (1, "event-1".into()),
                (2, "event-2".into()),
                (3, "event-3".into()),
                (4, "event-4".into()),
                (5, "event-5".into())
            ]
        );
        let (journal, recovered) = Journal::open(dir.path()).unwrap();
        // Committed 1–3 were trimmed; 4 is replayed too (committed but not trimmed: the writer
        // is idempotent), 5 was never committed.
        assert_eq!(
            ids(&recovered),
            vec![(1, "event-4".into()), (2, "event-5".into())]
        );
        let mut next = Vec::new();
        journal
            .append(record(7), |seq, r| next.push((seq, r)))
            .unwrap();
        assert_eq!(ids(&next), vec![(3, "event-7".into())]);
        journal.committed(3).unwrap();
        drop(journal);
        let (_, recovered) = Journal::open(dir.path()).unwrap();
        assert!(
            recovered.is_empty(),
            "everything committed: nothing to replay"
        );
    }
}
