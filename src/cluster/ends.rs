//! The cluster's stream of ends (SPEC §9, joins across the cluster): every run that ends for good is added to one
//! stream by its runner's history writer, and every runner reads that stream, its own ends included, so the
//! `after` joins of every runner hear the same ends in the same order and complete with the same runs; the firing
//! a join makes is then claimed once, by those runs (`claims`).

use redis::streams::StreamReadReply;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, Keys, RunEnded};
use crate::store::{Outcome, RunRow};

/// About how many ends the stream keeps (`XADD MAXLEN ~`): a runner cut off longer than that many ends misses some.
pub const ENDS_CAP: u64 = 10_000;
/// How long one read waits for new ends before it asks again.
const BLOCK: Duration = Duration::from_secs(1);

/// The end a history row tells of, when it is one joins hear: a run that ended for good, not stopped or
/// interrupted (as a runner's own joins hear its runs).
pub fn end_of(row: &RunRow) -> Option<(bool, &RunRow)> {
    let succeeded = match row.outcome {
        Outcome::Succeeded => true,
        Outcome::Failed | Outcome::Timeout | Outcome::Unhealthy | Outcome::SpawnFailed => false,
        _ => return None,
    };
    row.run.map(|_| (succeeded, row))
}

/// Add a run's end to the stream (from the runner's history writer).
pub fn publish(
    conn: &mut redis::Connection,
    keys: &Keys,
    runner: &str,
    row: &RunRow,
) -> redis::RedisResult<()> {
    let Some((succeeded, row)) = end_of(row) else {
        return Ok(());
    };
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys.ends())
        .arg("MAXLEN")
        .arg("~")
        .arg(ENDS_CAP)
        .arg("*")
        .arg("job")
        .arg(&row.job)
        .arg("run")
        .arg(row.run.unwrap_or(0))
        .arg("ok")
        .arg(if succeeded { "1" } else { "0" })
        .arg("runner")
        .arg(runner);
    if let Some(code) = row.code {
        cmd.arg("code").arg(code);
    }
    if let Some(signal) = &row.signal {
        cmd.arg("signal").arg(signal);
    }
    cmd.query::<String>(conn).map(drop)
}

/// Read the stream of ends from now on, on the async runtime, telling each to `tell`; a store that does not answer
/// is read again (from the last end read) once it does.
pub fn follow(config: &Config, client: redis::Client, tell: Arc<dyn Fn(RunEnded) + Send + Sync>) {
    let keys = config.keys();
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        loop {
            let connected = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(super::claims::CONNECT_TIMEOUT))
                .set_response_timeout(Some(BLOCK + super::claims::RESPONSE_TIMEOUT));
            let mut conn = match client
                .get_multiplexed_async_connection_with_config(&connected)
                .await
            {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if last.is_none() {
                // From the last end there now: what ended before this runner started is not heard.
                let newest: redis::RedisResult<redis::streams::StreamRangeReply> =
                    redis::cmd("XREVRANGE")
                        .arg(keys.ends())
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await;
                match newest {
                    Ok(r) => last = Some(r.ids.first().map_or("0-0".into(), |e| e.id.clone())),
                    Err(_) => continue,
                }
            }
            loop {
                let from = last.clone().unwrap_or_else(|| "0-0".into());
                let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1000)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(keys.ends())
                    .arg(from)
                    .query_async(&mut conn)
                    .await;
                let Ok(read) = read else { break };
                for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    last = Some(entry.id.clone());
                    let field = |name: &str| entry.get::<String>(name);
                    let (Some(job), Some(run)) =
                        (field("job"), field("run").and_then(|r| r.parse().ok()))
                    else {
                        continue;
                    };
                    tell(RunEnded {
                        job,
                        run,
                        succeeded: field("ok").as_deref() == Some("1"),
                        code: field("code").and_then(|c| c.parse().ok()),
                        signal: field("signal"),
                        runner: field("runner").unwrap_or_default(),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
