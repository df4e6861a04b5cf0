//! The runners of a cluster as its store shows them: read by `flowrun status --store` from any host and by a
//! runner's `GET /api/v1/cluster`.

use redis::Commands;

use super::{Keys, RunnerInfo};

/// One runner as the store shows it (`status --store --format json`, and the API's `/api/v1/cluster`).
#[derive(serde::Serialize)]
pub struct Runner {
    #[serde(flatten)]
    pub info: RunnerInfo,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    pub live_runs: u64,
    /// It runs another text of the workflow than the file given.
    pub file_differs: bool,
}

/// The runners of a cluster with a heartbeat, by id; `hash` is the file's, to flag the others.
pub fn runners(
    conn: &mut redis::Connection,
    keys: &Keys,
    hash: &str,
) -> redis::RedisResult<Vec<Runner>> {
    let mut ids: Vec<String> = conn.smembers(keys.runners())?;
    ids.sort();
    let mut runners = Vec::new();
    for id in ids {
        let info: Option<String> = conn.get(keys.runner(&id))?;
        let Some(info) = info.and_then(|i| serde_json::from_str::<RunnerInfo>(&i).ok()) else {
            continue;
        };
        let left: i64 = conn.pttl(keys.runner(&id))?;
        let live: u64 = conn.hlen(keys.live(&id))?;
        runners.push(Runner {
            heartbeat_age_ms: info.lease_ms.saturating_sub(left.max(0) as u64),
            file_differs: info.file_hash != hash,
            live_runs: live,
            info,
        });
    }
    Ok(runners)
}
