//! History a page at a time, for the control API: a page is read by its own bounded query, so no request ever
//! holds more than one page of rows, whatever the table holds. The cursor is the row id: rows are appended with
//! growing ids and read newest first, so "ids below the last one given" is the rest of the walk, stable while
//! new rows arrive above it.

use super::{db_error, of_jobs, row_from, SqliteStore, COLUMNS};
use crate::store::{RunRow, StoreError};

/// Where `id` is in the page's rows: after the 18 columns [`row_from`] reads.
const ID_COLUMN: usize = 18;

/// What a page's rows must be, beside their jobs.
#[derive(Debug, Default, Clone)]
pub struct PageFilter {
    pub outcome: Option<crate::store::Outcome>,
    /// Runs that began (or were due, or ended) at or after this.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// One page of history, newest first.
#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<RunRow>,
    /// The cursor of the next page (`before=`), when more rows match.
    pub next: Option<i64>,
}

impl SqliteStore {
    /// At most `size` rows of `jobs` (every job when empty) that pass `filter`, with an id below `before`,
    /// newest first.
    pub fn history_page(
        &self,
        jobs: &[String],
        filter: &PageFilter,
        before: Option<i64>,
        size: usize,
    ) -> Result<Page, StoreError> {
        let mut sql = format!("SELECT {COLUMNS}, id FROM runs WHERE id < ?");
        let mut args: Vec<rusqlite::types::Value> = vec![before.unwrap_or(i64::MAX).into()];
        of_jobs(&mut sql, &mut args, jobs);
        if let Some(outcome) = filter.outcome {
            sql.push_str(" AND outcome = ?");
            args.push(outcome.as_str().to_string().into());
        }
        if let Some(since) = filter.since {
            sql.push_str(" AND coalesce(started, scheduled, ended) >= ?");
            args.push(crate::event::timestamp(since).into());
        }
        // One row more than the page: whether it exists says if there is a next page, without counting.
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", size + 1));
        let e = |e| db_error(&self.path, e);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(e)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(e)?;
        let mut page = Page {
            rows: Vec::with_capacity(size.min(64)),
            next: None,
        };
        let mut last = None;
        while let Some(row) = rows.next().map_err(e)? {
            if page.rows.len() == size {
                page.next = last;
                break;
            }
            // The id follows the run's columns.
            last = Some(row.get::<_, i64>(ID_COLUMN).map_err(e)?);
            page.rows.push(row_from(row).map_err(e)?);
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Op, Outcome, Store};

    /// A locked store with runs 1..=n of `a` and, between them, runs of `b`.
    fn store_with(n: u64) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.lock().unwrap();
        let ops: Vec<Op> = (1..=n)
            .flat_map(|i| {
                let run = |job: &str| RunRow {
                    run: Some(i),
                    ..RunRow::new(job.into(), Outcome::Succeeded)
                };
                [
                    Op::Append(Box::new(run("a"))),
                    Op::Append(Box::new(run("b"))),
                ]
            })
            .collect();
        store.apply(&ops).unwrap();
        (dir, store)
    }

    /// Every page of a walk, following the cursor.
    fn walk(store: &SqliteStore, jobs: &[String], size: usize) -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .history_page(jobs, &PageFilter::default(), before, size)
                .unwrap();
            pages.push(page.rows.iter().map(|r| r.run.unwrap()).collect());
            match page.next {
                Some(next) => before = Some(next),
                None => return pages,
            }
        }
    }

    #[test]
    fn a_walk_gives_every_row_once_newest_first() {
        let (_dir, store) = store_with(25);
        let pages = walk(&store, &["a".to_string()], 10);
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let runs: Vec<u64> = pages.concat();
        assert_eq!(runs, (1..=25).rev().collect::<Vec<u64>>());
        // Every job: both jobs' rows, interleaved as written.
        assert_eq!(walk(&store, &[], 50).concat().len(), 50);
    }

    #[test]
    fn a_page_that_ends_the_rows_exactly_has_no_next() {
        let (_dir, store) = store_with(10);
        let page = store
            .history_page(&["a".to_string()], &PageFilter::default(), None, 10)
            .unwrap();
        assert_eq!((page.rows.len(), page.next), (10, None));
        let empty = store
            .history_page(&["nobody".to_string()], &PageFilter::default(), None, 10)
            .unwrap();
        assert!(empty.rows.is_empty() && empty.next.is_none());
    }

    #[test]
    fn a_page_keeps_only_the_outcome_and_the_time_asked_for() {
        let (_dir, mut store) = store_with(5);
        let failed = RunRow {
            run: Some(9),
            started: Some(chrono::Utc::now()),
            ..RunRow::new("a".into(), Outcome::Failed)
        };
        store.apply(&[Op::Append(Box::new(failed))]).unwrap();
        let only = |filter: PageFilter| {
            let page = store.history_page(&[], &filter, None, 100).unwrap();
            page.rows
                .iter()
                .map(|r| r.run.unwrap())
                .collect::<Vec<u64>>()
        };
        let failed = PageFilter {
            outcome: Some(Outcome::Failed),
            ..PageFilter::default()
        };
        assert_eq!(only(failed), [9]);
        let succeeded = PageFilter {
            outcome: Some(Outcome::Succeeded),
            ..PageFilter::default()
        };
        assert_eq!(only(succeeded).len(), 10);
        let recent = PageFilter {
            since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
            ..PageFilter::default()
        };
        assert_eq!(only(recent), [9], "the other rows have no time");
        let future = PageFilter {
            since: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..PageFilter::default()
        };
        assert!(only(future).is_empty());
    }
}
