//! The local store of a durable channel: a folder of append-only segments holding the messages as they came, and
//! a journal of what was delivered and done.
//!
//! - `seg-<first seq>.log`: records `[len u32][count u32][seq u64][unix ms u64][messages][crc32 u32]` (little
//!   endian; the CRC covers the header and the messages). A segment is closed at 8 MiB and deleted once every
//!   message in it is done, so the disk is given back as the readers go.
//! - `journal.log`: records `[kind u8][seq u64][count u64][crc32 u32]`: delivered, done, or the lowest message
//!   not done (written when the journal is rewritten, at 1 MiB, with only what is still needed).
//!
//! A crash can leave a torn record at the end of a file (written, not synced): it fails its CRC and is cut off
//! at the next open. Only the last segment and the journal are ever appended to, so a bad record anywhere else
//! is damage, and opening says so rather than guessing. Why this and not SQLite: measured in BENCHMARKS.md.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{DurableStore, Pending, RangeSet, Seq, SeqRange, Usage};

/// A segment is closed (and a new one begun) past this size.
const SEGMENT_BYTES: u64 = 4 << 20;
/// The journal is rewritten with only what is still needed past this size.
const JOURNAL_BYTES: u64 = 1 << 20;
/// With every message done, a segment or journal past this size is begun anew (the disk given back at once).
const IDLE_BYTES: u64 = 64 << 10;
const HEADER: usize = 24;
const JOURNAL_RECORD: usize = 21;

const DELIVERED: u8 = 1;
const DONE: u8 = 2;
/// Every message below this number is done.
const LOW: u8 = 3;

/// One closed or open segment.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// One past its last message.
    end: Seq,
    bytes: u64,
}

/// A record's place, for the oldest message's age and for reading messages back.
#[derive(Debug, Clone, Copy)]
struct RecordAt {
    seq: Seq,
    count: u64,
    millis: u64,
}

pub struct LocalLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    tail: File,
    journal: File,
    journal_bytes: u64,
    /// Appended and journalled since the last commit: written and synced by `commit`.
    tail_buffer: Vec<u8>,
    journal_buffer: Vec<u8>,
    /// A new segment was begun since the last commit: the folder is synced too.
    new_file: bool,
    next_seq: Seq,
    /// Every message below is done.
    low: Seq,
    /// `low` as of the last stage: what the sync that follows makes durable (segments below it may go).
    staged_low: Seq,
    /// Done at or above `low`.
    done: RangeSet,
    /// Delivery counts of ranges handed out and not done: start -> (end, times).
    deliveries: BTreeMap<Seq, (Seq, u32)>,
    /// Records not wholly done, oldest first (for the oldest message's age).
    records: VecDeque<RecordAt>,
    pending: Vec<Pending>,
    /// What opening found that a person should hear (a damaged journal record skipped).
    notes: Vec<String>,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn damaged(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what} (the durable channel's store is damaged; move the folder away to start it empty)", path.display()),
    )
}

impl LocalLog {
    /// Open (or make) the store in `dir`: what was not done is in [`DurableStore::take_pending`].
    pub fn open(dir: &Path) -> io::Result<LocalLog> {
        // The state's own modes: the messages are the workflow's data, for its user only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut names: Vec<(Seq, PathBuf)> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let first = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();
        let journal_path = dir.join("journal.log");
        let (marks, journal_bytes) = read_journal(&journal_path)?;
        let mut log = LocalLog {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            tail: File::open("/dev/null")?,
            journal: OpenOptions::new()
                .mode(0o600)
                .create(true)
                .append(true)
                .open(&journal_path)?,
            journal_bytes,
            tail_buffer: Vec::new(),
            journal_buffer: Vec::new(),
            new_file: false,
            next_seq: 1,
            low: marks.low,
            staged_low: marks.low,
            done: marks.done,
            deliveries: marks.deliveries,
            records: VecDeque::new(),
            pending: Vec::new(),
            notes: Vec::new(),
        };
        if marks.skipped > 0 {
            log.notes.push(format!(
                "{}: {} damaged record(s) skipped; messages they marked done may be delivered again",
                journal_path.display(),
                marks.skipped
            ));
        }
        // Segments below the first one were deleted, all done, and the marks saying so may not have reached the
        // disk before a crash: what is not in a segment any more is done.
        if let Some(&(first, _)) = names.first() {
            log.low = log.low.max(first);
            log.staged_low = log.low;
        }
        let last = names.len().saturating_sub(1);
        for (i, (first, path)) in names.into_iter().enumerate() {
            log.load_segment(first, path, i == last)?;
        }
        log.settle_low();
        if log.segments.is_empty() {
            log.begin_segment()?;
        } else {
            let path = &log.segments.last().expect("a segment").path;
            log.tail = OpenOptions::new().append(true).open(path)?;
        }
        Ok(log)
    }

    /// Read one segment's records: the messages not done become pending. A torn record at the end of the last
    /// segment is cut off.
    fn load_segment(&mut self, first: Seq, path: PathBuf, last: bool) -> io::Result<()> {
        let mut data = Vec::new();
        File::open(&path)?.read_to_end(&mut data)?;
        let mut at = 0;
        let mut end = first;
        while at < data.len() {
            let Some((record, size)) = parse_record(&data[at..]) else {
                // Only the end of the last segment can be torn (written, not synced, at a crash): a bad record
                // with a whole record after it is damage, said rather than cut off with what follows.
                if !last || whole_record_after(&data, at, end) {
                    return Err(damaged(&path, &format!("a bad record at byte {at}")));
                }
                // Written and not synced before a crash: never acknowledged, never delivered.
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(at as u64)?;
                File::open(&path)?.sync_all()?;
                break;
            };
            if record.seq != end {
                return Err(damaged(
                    &path,
                    &format!("message {} where {end} was due", record.seq),
                ));
            }
            self.keep_pending(&record, &data[at + HEADER..at + size - 4]);
            end = record.seq + record.count;
            at += size;
        }
        let bytes = at as u64;
        self.next_seq = self.next_seq.max(end);
        self.segments.push(Segment { path, end, bytes });
        Ok(())
    }

    /// The messages of a record that are not done, as pending runs of consecutive messages.
    fn keep_pending(&mut self, record: &RecordAt, messages: &[u8]) {
        let mut kept = false;
        let lines = messages.split_inclusive(|&b| b == b'\n');
        for (seq, line) in (record.seq..).zip(lines) {
            if seq < self.low || self.done.contains(seq) {
                continue;
            }
            kept = true;
            let deliveries = self.deliveries_of(seq);
            match self.pending.last_mut() {
                Some(p) if p.seq + p.count == seq && p.deliveries == deliveries => {
                    p.bytes.extend_from_slice(line);
                    p.count += 1;
                }
                _ => self.pending.push(Pending {
                    seq,
                    count: 1,
                    bytes: line.to_vec(),
                    deliveries,
                }),
            }
        }
        if kept {
            self.records.push_back(*record);
        }
    }

    fn deliveries_of(&self, seq: Seq) -> u32 {
        self.deliveries
            .range(..=seq)
            .next_back()
            .filter(|(_, &(end, _))| seq < end)
            .map_or(0, |(_, &(_, times))| times)
    }

    fn begin_segment(&mut self) -> io::Result<()> {
        let path = self.dir.join(format!("seg-{:020}.log", self.next_seq));
        self.tail = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        self.segments.push(Segment {
            path,
            end: self.next_seq,
            bytes: 0,
        });
        self.new_file = true;
        Ok(())
    }

    /// Move `low` past what is done, and give back what it leaves behind: whole segments, the journal's records.
    fn settle_low(&mut self) {
        while let Some(end) = self.done.take_from(self.low) {
            self.low = end;
        }
        self.done.drop_below(self.low);
        let low = self.low;
        self.deliveries.retain(|_, &mut (end, _)| end > low);
        while self.records.front().is_some_and(|r| r.seq + r.count <= low) {
            self.records.pop_front();
        }
    }

    /// Delete the segments all of whose messages are done, as the last sync recorded it (done marks made since are
    /// not on disk yet), never the one being appended to.
    fn give_back_segments(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 && self.segments[0].end <= self.staged_low.min(self.low) {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path)?;
        }
        Ok(())
    }

    /// Rewrite the journal with only what is still needed: the low mark, done ranges above it, deliveries of
    /// what is not done. Written aside, synced, then renamed over the old one.
    fn rewrite_journal(&mut self) -> io::Result<()> {
        let mut text = Vec::new();
        journal_record(&mut text, LOW, self.low, 0);
        for (start, end) in self.done.iter() {
            journal_record(&mut text, DONE, start, end - start);
        }
        for (&start, &(end, times)) in &self.deliveries {
            for _ in 0..times {
                journal_record(&mut text, DELIVERED, start, end - start);
            }
        }
        let fresh = self.dir.join("journal.new");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&fresh)?;
        file.write_all(&text)?;
        file.sync_all()?;
        let path = self.dir.join("journal.log");
        fs::rename(&fresh, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.journal = OpenOptions::new().append(true).open(&path)?;
        self.journal_bytes = text.len() as u64;
        Ok(())
    }
}

impl DurableStore for LocalLog {
    fn append(&mut self, messages: &[u8], count: u64) -> io::Result<Seq> {
        if count == 0 {
            return Ok(self.next_seq);
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.bytes >= SEGMENT_BYTES)
        {
            // The closed segment's records go out now; the next sync covers the new one (and the folder).
            write_whole(&mut self.tail, &self.tail_buffer)?;
            self.tail_buffer.clear();
            self.tail.sync_data()?;
            self.begin_segment()?;
        }
        let seq = self.next_seq;
        let millis = now_millis();
        let start = self.tail_buffer.len();
        self.tail_buffer
            .extend_from_slice(&(messages.len() as u32).to_le_bytes());
        self.tail_buffer
            .extend_from_slice(&(count as u32).to_le_bytes());
        self.tail_buffer.extend_from_slice(&seq.to_le_bytes());
        self.tail_buffer.extend_from_slice(&millis.to_le_bytes());
        self.tail_buffer.extend_from_slice(messages);
        let crc = crc32fast::hash(&self.tail_buffer[start..]);
        self.tail_buffer.extend_from_slice(&crc.to_le_bytes());
        let segment = self.segments.last_mut().expect("a segment is open");
        segment.bytes += (self.tail_buffer.len() - start) as u64;
        segment.end = seq + count;
        self.next_seq = seq + count;
        self.records.push_back(RecordAt { seq, count, millis });
        Ok(seq)
    }

    fn stage(&mut self) -> io::Result<super::Sync> {
        self.staged_low = self.low;
        let wrote_tail = !self.tail_buffer.is_empty();
        if wrote_tail {
            write_whole(&mut self.tail, &self.tail_buffer)?;
            self.tail_buffer.clear();
        }
        let wrote_journal = !self.journal_buffer.is_empty();
        if wrote_journal {
            write_whole(&mut self.journal, &self.journal_buffer)?;
            self.journal_bytes += self.journal_buffer.len() as u64;
            self.journal_buffer.clear();
        }
        let tail = match wrote_tail || self.new_file {
            true => Some(self.tail.try_clone()?),
            false => None,
        };
        let dir = std::mem::take(&mut self.new_file).then(|| self.dir.clone());
        let journal = match wrote_journal {
            true => Some(self.journal.try_clone()?),
            false => None,
        };
        Ok(Box::new(move || {
            // The messages first: a journal record never speaks of messages that could be lost.
            if let Some(tail) = tail {
                tail.sync_data()?;
            }
            if let Some(dir) = dir {
                File::open(dir)?.sync_all()?;
            }
            if let Some(journal) = journal {
                journal.sync_data()?;
            }
            Ok(())
        }))
    }

    fn settle(&mut self) -> io::Result<()> {
        let all_done = self.low == self.next_seq && self.tail_buffer.is_empty();
        if all_done && self.segments.last().is_some_and(|s| s.bytes > IDLE_BYTES) {
            // Nothing waits: the segment being appended to is done too, and goes with the others.
            self.begin_segment()?;
        }
        self.give_back_segments()?;
        if self.journal_bytes > JOURNAL_BYTES || (all_done && self.journal_bytes > IDLE_BYTES) {
            self.rewrite_journal()?;
        }
        Ok(())
    }

    fn delivered(&mut self, range: SeqRange) -> io::Result<()> {
        journal_record(
            &mut self.journal_buffer,
            DELIVERED,
            range.start,
            range.count,
        );
        count_delivery(&mut self.deliveries, range.start, range.end());
        Ok(())
    }

    fn done(&mut self, range: SeqRange) -> io::Result<()> {
        journal_record(&mut self.journal_buffer, DONE, range.start, range.count);
        self.done.insert(range.start, range.end());
        self.settle_low();
        Ok(())
    }

    fn deliveries(&self, seq: Seq) -> u32 {
        self.deliveries_of(seq)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn take_pending(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.pending)
    }

    fn usage(&self) -> Usage {
        let depth = (self.next_seq - self.low) - self.done.count_in(self.low, self.next_seq);
        Usage {
            depth,
            oldest: self
                .records
                .front()
                .map(|r| UNIX_EPOCH + Duration::from_millis(r.millis)),
            bytes_on_disk: self.segments.iter().map(|s| s.bytes).sum::<u64>() + self.journal_bytes,
        }
    }
}

/// Append all of `data`, or nothing: a write that fails half way (a full disk) is cut back, so that the retry
/// does not leave half a record before a whole one.
fn write_whole(file: &mut File, data: &[u8]) -> io::Result<()> {
    let before = file.metadata()?.len();
    file.write_all(data).inspect_err(|_| {
        let _ = file.set_len(before);
    })
}

/// Whether a whole record of message `due` or later starts somewhere after byte `at` (then the bad record at `at`
/// is damage, not a torn end). Only a header whose number could follow is checked for its CRC, so this stays cheap.
fn whole_record_after(data: &[u8], at: usize, due: Seq) -> bool {
    (at + 1..data.len().saturating_sub(HEADER)).any(|i| {
        let seq = u64::from_le_bytes(data[i + 8..i + 16].try_into().expect("8 bytes"));
        (due..due.saturating_add(1 << 32)).contains(&seq)
            && parse_record(&data[i..]).is_some_and(|(r, _)| r.seq == seq)
    })
}

/// One record at the start of `data` and its size, if it is whole and its CRC holds.
fn parse_record(data: &[u8]) -> Option<(RecordAt, usize)> {
    let header = data.get(..HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let count = u32::from_le_bytes(header[4..8].try_into().ok()?) as u64;
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let millis = u64::from_le_bytes(header[16..24].try_into().ok()?);
    let size = HEADER + len + 4;
    let body = data.get(..size)?;
    let crc = u32::from_le_bytes(body[size - 4..].try_into().ok()?);
    (crc32fast::hash(&body[..size - 4]) == crc && count > 0)
        .then_some((RecordAt { seq, count, millis }, size))
}

/// One more delivery of the messages `[start, end)`, in a map of disjoint ranges (start -> (end, times)): the
/// ranges it cuts are split, so a later batch of another size counts each message's deliveries right.
fn count_delivery(map: &mut BTreeMap<Seq, (Seq, u32)>, start: Seq, end: Seq) {
    if start >= end {
        return;
    }
    for at in [start, end] {
        let cut = map
            .range(..at)
            .next_back()
            .filter(|(_, &(e, _))| at < e)
            .map(|(&s, &(e, t))| (s, e, t));
        if let Some((s, e, t)) = cut {
            map.insert(s, (at, t));
            map.insert(at, (e, t));
        }
    }
    let mut next = start;
    let inside: Vec<(Seq, Seq, u32)> = map
        .range(start..end)
        .map(|(&s, &(e, t))| (s, e, t))
        .collect();
    for (s, e, t) in inside {
        if next < s {
            map.insert(next, (s, 1));
        }
        map.insert(s, (e, t + 1));
        next = e;
    }
    if next < end {
        map.insert(next, (end, 1));
    }
}

fn journal_record(out: &mut Vec<u8>, kind: u8, seq: Seq, count: u64) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// What the journal says: the low mark, what is done above it, how often ranges were delivered.
#[derive(Default)]
struct Marks {
    low: Seq,
    done: RangeSet,
    deliveries: BTreeMap<Seq, (Seq, u32)>,
    /// Damaged records skipped (not at the end).
    skipped: usize,
}

/// Replay the journal (a torn record at its end is cut off); its size after that.
fn read_journal(path: &Path) -> io::Result<(Marks, u64)> {
    let mut marks = Marks {
        low: 1,
        ..Marks::default()
    };
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((marks, 0)),
        Err(e) => return Err(e),
    }
    let mut at = 0;
    // The end of what is whole: a bad record after it is torn (cut off); one before it is damage, skipped.
    let mut whole_end = 0;
    while let Some(record) = data.get(at..at + JOURNAL_RECORD) {
        let crc = u32::from_le_bytes(record[17..21].try_into().expect("4 bytes"));
        at += JOURNAL_RECORD;
        if crc32fast::hash(&record[..17]) != crc || !matches!(record[0], LOW | DONE | DELIVERED) {
            marks.skipped += 1;
            continue;
        }
        whole_end = at;
        let seq = u64::from_le_bytes(record[1..9].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(record[9..17].try_into().expect("8 bytes"));
        match record[0] {
            LOW => marks.low = marks.low.max(seq),
            DONE => marks.done.insert(seq, seq + count),
            DELIVERED => count_delivery(&mut marks.deliveries, seq, seq + count),
            _ => unreachable!("the kinds are checked above"),
        }
    }
    // Bad records at the very end were being written at a crash: never synced, nothing relied on them.
    marks.skipped -= (at - whole_end) / JOURNAL_RECORD;
    if whole_end < data.len() {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(whole_end as u64)?;
        file.sync_all()?;
    }
    Ok((marks, whole_end as u64))
}

#[cfg(test)]
mod tests;
