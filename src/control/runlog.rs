//! `GET /api/v1/jobs/{job}/runs/{run}/log`: a run's log as its file keeps it (`text/plain`); with
//! `?follow=true`, as server-sent events: what the file holds, then what the run writes while it lives (each
//! event's data is whole lines), then `event: end` with the run's outcome. The file is read again every
//! [`TICK`] and at once when the run's events say it ended; the history says when it is over.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::api::error;
use super::runs::{job_and_run, read_run, refused};
use super::Context;
use crate::store::{Outcome, RunRow};

/// How often a followed log is looked at again (a person is reading; the run's end is heard at once).
const TICK: Duration = Duration::from_millis(250);
/// Ticks between two looks at the history for the run's end (the end event usually says it first).
const CHECK_EVERY: u32 = 4;
/// The most one event carries (a run printing fast is sent in pieces of this size).
const CHUNK: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct LogQuery {
    follow: Option<bool>,
}

pub async fn log(
    State(ctx): State<Arc<Context>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let (job, number) = match job_and_run(path) {
        Ok(found) => found,
        Err(why) => return refused(why),
    };
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query: use ?follow=true");
    };
    // Heard from now on: an end while the row is read is not missed.
    let tap = ctx.reporter.subscribe();
    let row = match read_run(&ctx, &job, number).await {
        Ok((row, _)) => row,
        Err(why) => return refused(why),
    };
    let file = log_path(&ctx, &row, &job, number);
    if !query.follow.unwrap_or(false) {
        return match tokio::fs::File::open(&file).await {
            Ok(opened) => text(opened),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "").into_response()
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}", file.display()),
            ),
        };
    }
    let Ok(permit) = ctx.streams.clone().try_acquire_owned() else {
        return super::events::too_many_streams();
    };
    let follow = Follow {
        _permit: permit,
        ctx,
        job,
        run: number,
        file,
        offset: 0,
        tap,
        ended: (row.outcome != Outcome::Running).then_some(row.outcome),
        finished: false,
        ticks: 0,
    };
    let events = stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, Infallible>(event), f))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(super::STREAM_KEEP_ALIVE))
        .into_response()
}

/// The whole log, sent as it is read (a piece at a time: a log of gigabytes costs the runner a piece, not the log).
fn text(file: tokio::fs::File) -> Response {
    let pieces = stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut piece = vec![0u8; CHUNK];
        match file.read(&mut piece).await {
            Ok(0) => None,
            Ok(n) => {
                piece.truncate(n);
                Some((Ok::<_, std::io::Error>(piece), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        axum::body::Body::from_stream(pieces),
    )
        .into_response()
}

/// Where the run's output is: the file its row names, or where the runner puts it.
fn log_path(ctx: &Context, row: &RunRow, job: &str, run: u64) -> PathBuf {
    match (&row.log, &ctx.readers) {
        (Some(log), _) => PathBuf::from(log),
        (None, Some(readers)) => readers
            .dir()
            .join("logs")
            .join(job)
            .join(format!("{run}.log")),
        (None, None) => PathBuf::new(),
    }
}

/// How much of `bytes` ends on a whole UTF-8 character: all of it, but for a character cut at the end (bytes that
/// are not UTF-8 at all are sent as they are, replaced).
fn utf8_whole(bytes: &[u8]) -> usize {
    // The last byte that starts a character (or is ASCII), within the longest character's reach of the end.
    let from = bytes.len().saturating_sub(4);
    for i in (from..bytes.len()).rev() {
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let width = match b {
            0xF0..=0xF4 => 4,
            0xE0..=0xEF => 3,
            0xC2..=0xDF => 2,
            _ => 1,
        };
        return if i + width > bytes.len() && i > 0 {
            i
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

/// A log followed: where it was read up to, and whether the run ended.
struct Follow {
    /// One of the streams open at once, given back when the follower goes.
    _permit: tokio::sync::OwnedSemaphorePermit,
    ctx: Arc<Context>,
    job: String,
    run: u64,
    file: PathBuf,
    offset: u64,
    tap: tokio::sync::broadcast::Receiver<Arc<str>>,
    /// The run's outcome once the history says it ended: what is left of the file is sent, then `end`.
    ended: Option<Outcome>,
    /// `end` was sent.
    finished: bool,
    ticks: u32,
}

impl Follow {
    /// The next event: output, or `end`; `None` after `end`.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.finished {
                return None;
            }
            let whole = self.ended.is_some();
            if let Some(text) = self.read_more(whole).await {
                return Some(Event::default().data(text));
            }
            if let Some(outcome) = self.ended {
                self.finished = true;
                return Some(Event::default().event("end").data(outcome.as_str()));
            }
            let check = self.wait().await;
            if check {
                self.ended = self.outcome_if_ended().await;
            }
        }
    }

    /// Whole lines written since the last read (with `all`, the rest too); `None`: nothing new.
    async fn read_more(&mut self, all: bool) -> Option<String> {
        let mut file = tokio::fs::File::open(&self.file).await.ok()?;
        file.seek(std::io::SeekFrom::Start(self.offset))
            .await
            .ok()?;
        let mut buf = Vec::new();
        file.take(CHUNK as u64).read_to_end(&mut buf).await.ok()?;
        let cut = match all || buf.len() == CHUNK {
            // A piece cut by its size ends on a whole character (the rest comes with the next piece).
            true if buf.len() == CHUNK && !all => utf8_whole(&buf),
            true => buf.len(),
            false => buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1),
        };
        if cut == 0 {
            return None;
        }
        buf.truncate(cut);
        self.offset += cut as u64;
        let text = String::from_utf8_lossy(&buf);
        Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
    }

    /// Wait a tick, or less when an event of this run says it ended; whether to look at the history now.
    async fn wait(&mut self) -> bool {
        self.ticks += 1;
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => return self.ticks % CHECK_EVERY == 0,
                heard = self.tap.recv() => match heard {
                    Ok(json) if self.is_end_of_this_run(&json) => return true,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        (&mut tick).await;
                        return true;
                    }
                },
            }
        }
    }

    fn is_end_of_this_run(&self, json: &str) -> bool {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(json) else {
            return false;
        };
        let event = record["event"].as_str().unwrap_or_default();
        matches!(event, "run.exit" | "run.retry" | "runner.stop")
            && (event == "runner.stop"
                || (record["job"] == self.job.as_str() && record["run"] == self.run))
    }

    /// The run's outcome when the history says it is over (a failed read: ask again at the next check).
    async fn outcome_if_ended(&self) -> Option<Outcome> {
        match read_run(&self.ctx, &self.job, self.run).await {
            Ok((row, _)) if row.outcome != Outcome::Running => Some(row.outcome),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_piece_ends_on_a_whole_character() {
        let text = "xé".repeat(3);
        let bytes = text.as_bytes();
        // Cut inside the last `é` (two bytes): the piece stops before it.
        assert_eq!(
            super::utf8_whole(&bytes[..bytes.len() - 1]),
            bytes.len() - 2
        );
        assert_eq!(super::utf8_whole(bytes), bytes.len());
        // Bytes that are not UTF-8 are not held back.
        assert_eq!(super::utf8_whole(b"ab\xff"), 3);
    }
}
