//! `GET /api/v1/history?job=&outcome=&since=&limit=&before=`: the history a page at a time. A page holds at most [`PAGE`] rows
//! whatever `limit` asks (older clients asking for up to 100,000 still get an answer, the rest by the cursor), is
//! read by one of the shared store readers and written as JSON there, so no request holds more than a page.
//! When more rows match, `Link: <...>; rel="next"` (RFC 8288) and `X-Next-Cursor` say how to get them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

use super::api::{error, json_bytes};
use super::readers::ReadError;
use super::Context;
use crate::store::{Outcome, Page, PageFilter};
use chrono::{DateTime, Utc};

/// The most rows one answer holds.
pub const PAGE: usize = 1000;
/// The largest `limit` taken (older clients asked for up to this many in one answer).
const MAX_LIMIT: usize = 100_000;
const DEFAULT_LIMIT: usize = 20;

#[derive(Deserialize)]
pub struct HistoryQuery {
    job: Option<String>,
    /// One outcome (`failed`, `succeeded`, ...).
    outcome: Option<String>,
    /// A duration ago (`1h`) or an RFC 3339 date-time.
    since: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// What a request asks, checked.
struct Asked {
    job: Option<String>,
    filter: PageFilter,
    /// As asked, for the next page's link.
    outcome: Option<String>,
    since: Option<String>,
    limit: usize,
    before: Option<i64>,
}

/// The query checked, or why it is refused (a 400).
fn check(query: Result<Query<HistoryQuery>, QueryRejection>) -> Result<Asked, &'static str> {
    let Ok(Query(q)) = query else {
        return Err("bad query: use ?job=NAME&outcome=OUTCOME&since=1h&limit=N&before=CURSOR");
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        // Not 0: an empty page could never lead anywhere.
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err("limit must be a whole number from 1 to 100000"),
    };
    let before = match q.before.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(cursor)) if cursor > 0 => Some(cursor),
        Some(_) => {
            return Err(
                "bad cursor: give `before` as the X-Next-Cursor (or the Link rel=\"next\") of the previous page",
            )
        }
    };
    let outcome = match q.outcome.as_deref().map(Outcome::parse) {
        None => None,
        Some(Some(outcome)) => Some(outcome),
        Some(None) => return Err(
            "outcome must be one of running, succeeded, failed, timeout, stopped, spawn-failed, interrupted, skipped, missed, unhealthy",
        ),
    };
    let since = match q.since.as_deref() {
        None => None,
        Some(text) => Some(since(text).ok_or(
            "since must be a duration ago (`1h`, `7d`) or an RFC 3339 date-time (`2026-12-07T18:00:00Z`)",
        )?),
    };
    Ok(Asked {
        job: q.job,
        filter: PageFilter { outcome, since },
        outcome: q.outcome,
        since: q.since,
        limit,
        before,
    })
}

/// `1h` (that long ago) or an RFC 3339 date-time.
fn since(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(ago) = crate::values::parse_duration(text) {
        let ago = chrono::Duration::from_std(ago).ok()?;
        return Utc::now().checked_sub_signed(ago);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub async fn history(
    State(ctx): State<Arc<Context>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let asked = match check(query) {
        Ok(asked) => asked,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(readers) = &ctx.readers else {
        return error(
            StatusCode::CONFLICT,
            "this runner keeps no history (--state none)",
        );
    };
    let jobs: Vec<String> = asked.job.iter().cloned().collect();
    let filter = asked.filter.clone();
    let (before, size) = (asked.before, asked.limit.min(PAGE));
    let read = readers
        .read(move |store| {
            let page = match store {
                Some(store) => store
                    .history_page(&jobs, &filter, before, size)
                    .map_err(|e| e.to_string())?,
                None => Page::default(),
            };
            // Written here, on the reader's thread: the JSON is bounded by the pool as the rows are.
            let body = serde_json::to_vec(&page.rows).map_err(|e| e.to_string())?;
            Ok((body, page.next))
        })
        .await;
    match read {
        Ok((body, next)) => {
            let mut response = json_bytes(StatusCode::OK, body.into());
            if let Some(cursor) = next {
                link_next(&mut response, &asked, cursor);
            }
            response
        }
        Err(ReadError::Busy) => busy(),
        Err(ReadError::Failed(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// 503: every store reader is busy and the line for them full (or the wait ran out).
fn busy() -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the history readers are all busy: try again in a second",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `Link: </api/v1/history?...&before=CURSOR>; rel="next"` and `X-Next-Cursor: CURSOR`.
fn link_next(response: &mut Response, asked: &Asked, cursor: i64) {
    let mut query = String::new();
    for (key, value) in [
        ("job", &asked.job),
        ("outcome", &asked.outcome),
        ("since", &asked.since),
    ] {
        if let Some(value) = value {
            query.push_str(&format!("{key}={}&", percent_encode(value)));
        }
    }
    let link = format!(
        "</api/v1/history?{query}limit={}&before={cursor}>; rel=\"next\"",
        asked.limit
    );
    let headers = response.headers_mut();
    if let Ok(link) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, link);
    }
    headers.insert("x-next-cursor", HeaderValue::from(cursor));
}

/// A query value with everything but RFC 3986's unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_name_is_encoded_for_the_link() {
        assert_eq!(percent_encode("back-up_1.x~"), "back-up_1.x~");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
