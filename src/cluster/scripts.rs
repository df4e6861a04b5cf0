//! The cluster's atomic steps, each one Lua script run by Redis as one command: no other client's command comes
//! between its reads and its writes.

use std::sync::LazyLock;

/// Claim a firing. KEYS: the claim, the handled hash, the job's counter, this runner's heartbeat.
/// ARGV: the claiming process (`ID#PID#START`), the claim's time to live (ms), the handled field, the instant
/// (ms), `1` for a number.
/// Returns -2 when this runner's lease lapsed (its heartbeat is gone: it may not claim until it renews it), -1
/// when another runner has the firing, else the run's number (0 when none was asked for). The handled instant
/// only moves forward. The claim holds `RUNNER|NUMBER`, so asking again for a firing this process already won (its
/// first answer was lost: a timeout) answers the same: a claim is never lost by its own winner.
pub static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[4]) == 0 then return -2 end
local held = redis.call('GET', KEYS[1])
if held then
  local who, n = string.match(held, '^(.*)|(%d+)$')
  if who == ARGV[1] then return tonumber(n) end
  return -1
end
local n = 0
if ARGV[5] == '1' then n = redis.call('INCR', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. n, 'PX', ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '-1')
if tonumber(ARGV[4]) > last then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
return n
"#,
    )
});

/// Renew a heartbeat. KEYS: the heartbeat, the runners set. ARGV: the info (JSON), the lease (ms), the id.
/// Returns 1 when the heartbeat was still there, 0 when it had lapsed (it is set again), -1 when another runner
/// holds it (it started under this id while this one's lease had lapsed: it is left to that runner).
pub static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if held then return 1 end
return 0
"#,
    )
});

/// Take over the live runs of a runner whose heartbeat is gone. KEYS: its heartbeat, its live hash, the runners
/// set. ARGV: its id. Returns `1` when this caller is the one that took it over (then its claims are this caller's
/// to look at), then the rows (JSON) taken, once: the live hash goes with them, so no other runner takes them too.
/// A runner whose heartbeat is back keeps them (`0`).
pub static TAKE_OVER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local rows = redis.call('HVALS', KEYS[2])
redis.call('DEL', KEYS[2])
local first = redis.call('SREM', KEYS[3], ARGV[1])
table.insert(rows, 1, first)
return rows
"#,
    )
});

/// Write a run's row. KEYS: the run's hash, the runner's live hash, the history stream. ARGV: the row (JSON), the
/// live field (`JOB#N`), `1` when the run is live (else it leaves the live hash), the runner's id, the stream's cap,
/// the hash's time to live once ended (ms, 0: none), the output's tail (may be empty). The stream names the run
/// once, at its first row.
pub static SAVE_RUN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local new = 1 - redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'row', ARGV[1], 'runner', ARGV[4])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('HDEL', KEYS[2], ARGV[2])
  if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'tail', ARGV[7]) end
if new == 1 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'run', KEYS[1])
end
return new
"#,
    )
});

/// Raise a counter to at least a value. KEYS: the counter. ARGV: the value.
pub static RAISE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"#,
    )
});

/// A join hears a run's end that meets its status. KEYS: the join's state. ARGV: the upstream positions the run's
/// job holds (comma separated), the run (JSON), the number of upstreams, `1` for an any-join. Returns the runs that
/// completed the join, by position (`POS`, `RUN`, ...), and starts it over; or nothing. One script: the runner
/// whose end completes a join is the one that fires it, once.
pub static JOIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
for k in string.gmatch(ARGV[1], '[^,]+') do redis.call('HSET', KEYS[1], k, ARGV[2]) end
local have = redis.call('HLEN', KEYS[1])
if (ARGV[4] == '1' and have >= 1) or have >= tonumber(ARGV[3]) then
  local all = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  return all
end
return {}
"#,
    )
});

/// Take over a claim whose runner died before starting its firing. KEYS: the claim. ARGV: its value as found, this
/// process (`ID#PID#START`). Returns the run's number when the claim is this process's now, else -1 (another took
/// it, or it changed).
pub static RECLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = string.match(ARGV[1], '|(%d+)$') or '0'
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. n, 'KEEPTTL')
return tonumber(n)
"#,
    )
});
