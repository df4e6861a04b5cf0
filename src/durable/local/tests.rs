use super::*;
use std::path::PathBuf;

fn lines(from: u64, n: u64) -> Vec<u8> {
    (from..from + n)
        .flat_map(|i| format!("m{i}\n").into_bytes())
        .collect()
}

fn pending_seqs(p: &[Pending]) -> Vec<(Seq, u64, u32)> {
    p.iter().map(|p| (p.seq, p.count, p.deliveries)).collect()
}

#[test]
fn committed_messages_come_back_after_a_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    assert_eq!(log.append(&lines(1, 3), 3).unwrap(), 1);
    assert_eq!(log.append(&lines(4, 2), 2).unwrap(), 4);
    log.commit().unwrap();
    assert_eq!(log.usage().depth, 5);
    drop(log);
    let mut log = LocalLog::open(dir.path()).unwrap();
    let pending = log.take_pending();
    assert_eq!(pending_seqs(&pending), [(1, 5, 0)]);
    assert_eq!(pending[0].bytes, lines(1, 5));
    // Numbers go on where they stopped: never reused.
    assert_eq!(log.append(b"x\n", 1).unwrap(), 6);
}

#[test]
fn what_is_done_out_of_order_is_not_delivered_again_and_deliveries_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    log.append(&lines(1, 10), 10).unwrap();
    log.commit().unwrap();
    log.delivered(SeqRange { start: 1, count: 4 }).unwrap();
    log.delivered(SeqRange { start: 5, count: 4 }).unwrap();
    // The second batch ended first.
    log.done(SeqRange { start: 5, count: 4 }).unwrap();
    log.commit().unwrap();
    assert_eq!(log.usage().depth, 6);
    drop(log);
    let mut log = LocalLog::open(dir.path()).unwrap();
    let pending = log.take_pending();
    assert_eq!(pending_seqs(&pending), [(1, 4, 1), (9, 2, 0)]);
    assert_eq!(pending[0].bytes, lines(1, 4));
    assert_eq!(pending[1].bytes, lines(9, 2));
    log.delivered(SeqRange { start: 1, count: 4 }).unwrap();
    log.commit().unwrap();
    drop(log);
    let mut log = LocalLog::open(dir.path()).unwrap();
    assert_eq!(pending_seqs(&log.take_pending()), [(1, 4, 2), (9, 2, 0)]);
}

#[test]
fn nothing_that_was_not_committed_survives_and_a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    log.append(&lines(1, 3), 3).unwrap();
    log.commit().unwrap();
    log.append(&lines(4, 3), 3).unwrap();
    // A crash before the commit: the buffer is lost.
    std::mem::forget(log);
    let segment = dir.path().join(format!("seg-{:020}.log", 1));
    let whole = fs::metadata(&segment).unwrap().len();
    // A record half written when the machine went down.
    let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
    f.write_all(&[40, 0, 0, 0, 2, 0, 0, 0, 4, 0]).unwrap();
    drop(f);
    let mut journal = OpenOptions::new()
        .append(true)
        .open(dir.path().join("journal.log"))
        .unwrap();
    journal.write_all(&[DONE, 1, 0, 0]).unwrap();
    drop(journal);
    let mut log = LocalLog::open(dir.path()).unwrap();
    assert_eq!(pending_seqs(&log.take_pending()), [(1, 3, 0)]);
    assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
    assert_eq!(
        fs::metadata(dir.path().join("journal.log")).unwrap().len(),
        0
    );
    assert_eq!(log.append(b"x\n", 1).unwrap(), 4);
}

#[test]
fn a_bad_record_inside_a_closed_segment_is_damage_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    let big = vec![b'a'; 1 << 20];
    let mut block = big.clone();
    block.push(b'\n');
    for _ in 0..10 {
        log.append(&block, 1).unwrap();
        log.commit().unwrap();
    }
    assert!(log.segments.len() >= 2);
    drop(log);
    let first = dir.path().join(format!("seg-{:020}.log", 1));
    let mut data = fs::read(&first).unwrap();
    data[100] ^= 0xff;
    fs::write(&first, data).unwrap();
    let error = LocalLog::open(dir.path()).err().expect("damage");
    assert!(error.to_string().contains("is damaged"), "{error}");
}

#[test]
fn disk_space_is_given_back_as_messages_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    let n = 200_000u64;
    let mut seq = 1;
    while seq <= n {
        let block = lines(seq, 1000);
        log.append(&block, 1000).unwrap();
        log.delivered(SeqRange {
            start: seq,
            count: 1000,
        })
        .unwrap();
        log.done(SeqRange {
            start: seq,
            count: 1000,
        })
        .unwrap();
        log.commit().unwrap();
        seq += 1000;
    }
    let usage = log.usage();
    assert_eq!(usage.depth, 0);
    assert!(usage.bytes_on_disk < 2 * IDLE_BYTES, "{usage:?}");
    let on_disk: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, usage.bytes_on_disk);
    drop(log);
    let mut log = LocalLog::open(dir.path()).unwrap();
    assert!(log.take_pending().is_empty());
    assert_eq!(log.append(b"x\n", 1).unwrap(), n + 1);
}

/// A model of the store: what was committed, what is done, how often delivered.
#[derive(Default)]
struct Model {
    committed: Vec<Vec<u8>>,
    done: std::collections::BTreeSet<Seq>,
    delivered: BTreeMap<Seq, u32>,
}

#[test]
fn random_work_with_crashes_agrees_with_a_model() {
    let mut seed = 99u64;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        let mut log = LocalLog::open(dir.path()).unwrap();
        // Appended, not yet committed (lost at a crash).
        let mut uncommitted: Vec<Vec<u8>> = Vec::new();
        let mut marks_uncommitted: Vec<(bool, Seq, u64)> = Vec::new();
        for _ in 0..300 {
            match next(10) {
                0..=3 => {
                    let count = 1 + next(5);
                    let first = (model.committed.len() + uncommitted.len()) as u64 + 1;
                    let msgs: Vec<Vec<u8>> = (0..count)
                        .map(|i| format!("r{round}-{}\n", first + i).into_bytes())
                        .collect();
                    let seq = log.append(&msgs.concat(), count).unwrap();
                    assert_eq!(seq, first);
                    uncommitted.extend(msgs);
                }
                4..=6 if !model.committed.is_empty() => {
                    let len = model.committed.len() as u64;
                    let start = 1 + next(len);
                    let count = 1 + next((len + 1 - start).min(4));
                    let is_done = next(2) == 0;
                    if is_done {
                        log.done(SeqRange { start, count }).unwrap();
                    } else {
                        log.delivered(SeqRange { start, count }).unwrap();
                    }
                    marks_uncommitted.push((is_done, start, count));
                }
                7 | 8 => {
                    log.commit().unwrap();
                    model.committed.append(&mut uncommitted);
                    for (is_done, start, count) in marks_uncommitted.drain(..) {
                        if is_done {
                            model.done.extend(start..start + count);
                        } else if !(start..start + count).all(|s| model.done.contains(&s)) {
                            *model.delivered.entry(start).or_default() += 1;
                        }
                    }
                }
                _ => {
                    // A crash: what was not committed is gone.
                    std::mem::forget(log);
                    uncommitted.clear();
                    marks_uncommitted.clear();
                    log = LocalLog::open(dir.path()).unwrap();
                    let pending = log.take_pending();
                    let mut expected = Vec::new();
                    for (i, m) in model.committed.iter().enumerate() {
                        let seq = i as u64 + 1;
                        if !model.done.contains(&seq) {
                            expected.push((seq, m.clone()));
                        }
                    }
                    let mut got = Vec::new();
                    for p in &pending {
                        for (i, line) in p.bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                            got.push((p.seq + i as u64, line.to_vec()));
                        }
                    }
                    assert_eq!(got, expected, "round {round}");
                    assert_eq!(log.usage().depth, expected.len() as u64);
                }
            }
        }
    }
}

/// A store of 10 messages of 1 MiB each, committed one by one: three segments.
fn three_segments() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    let mut block = vec![b'a'; 1 << 20];
    block.push(b'\n');
    for _ in 0..10 {
        log.append(&block, 1).unwrap();
        log.commit().unwrap();
    }
    drop(log);
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("seg-"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    (dir, segments)
}

#[test]
fn a_bad_record_with_whole_ones_after_it_in_the_last_segment_is_damage_not_a_torn_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    for i in 0..10 {
        log.append(&lines(i * 100 + 1, 100), 100).unwrap();
        log.commit().unwrap();
    }
    drop(log);
    let segment = dir.path().join(format!("seg-{:020}.log", 1));
    let whole = fs::metadata(&segment).unwrap().len();
    let mut data = fs::read(&segment).unwrap();
    data[800] ^= 0xff;
    fs::write(&segment, data).unwrap();
    let error = LocalLog::open(dir.path()).err().expect("damage");
    assert!(error.to_string().contains("is damaged"), "{error}");
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        whole,
        "nothing was cut off"
    );
}

#[test]
fn a_damaged_journal_record_is_skipped_and_said_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    log.append(&lines(1, 10), 10).unwrap();
    log.commit().unwrap();
    for i in 0..10 {
        log.done(SeqRange {
            start: i + 1,
            count: 1,
        })
        .unwrap();
        log.commit().unwrap();
    }
    drop(log);
    let journal = dir.path().join("journal.log");
    let mut data = fs::read(&journal).unwrap();
    data[1] ^= 0xff;
    fs::write(&journal, data).unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    // The first done mark is lost: message 1 comes again; the nine after it stay done.
    assert_eq!(pending_seqs(&log.take_pending()), [(1, 1, 0)]);
    let notes = log.take_notes();
    assert!(
        notes[0].contains("1 damaged record(s) skipped"),
        "{notes:?}"
    );
}

#[test]
fn segments_gone_before_their_done_marks_reached_the_disk_are_done() {
    // A crash after a segment was deleted and before the marks that let it go were synced.
    let (dir, segments) = three_segments();
    fs::remove_file(&segments[0]).unwrap();
    fs::write(dir.path().join("journal.log"), b"").unwrap();
    let mut log = LocalLog::open(dir.path()).unwrap();
    let pending = log.take_pending();
    let first: Seq = segments[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("seg-")
        .trim_end_matches(".log")
        .parse()
        .unwrap();
    assert_eq!(pending[0].seq, first);
    assert_eq!(log.usage().depth, 11 - first);
}

#[test]
fn deliveries_are_counted_per_message_whatever_the_batches() {
    let mut map = BTreeMap::new();
    count_delivery(&mut map, 1, 11);
    count_delivery(&mut map, 11, 21);
    // A later start takes batches of 3.
    count_delivery(&mut map, 1, 4);
    count_delivery(&mut map, 4, 7);
    let times = |map: &BTreeMap<Seq, (Seq, u32)>, upto: Seq| {
        (1..=upto)
            .map(|seq| {
                map.range(..=seq)
                    .next_back()
                    .filter(|(_, &(e, _))| seq < e)
                    .map_or(0, |(_, &(_, t))| t)
            })
            .collect::<Vec<u32>>()
    };
    assert_eq!(times(&map, 12), [2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
    count_delivery(&mut map, 5, 15);
    assert_eq!(
        times(&map, 16),
        [2, 2, 2, 2, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]
    );
}
