//! The cluster's keys in Redis: every one starts with `flowrun:NAME:` (job and runner names hold no `:`).

/// The key names of one cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("flowrun:{cluster}:"),
        }
    }

    /// A runner's heartbeat: its `RunnerInfo` as JSON, expiring after its lease.
    pub fn runner(&self, id: &str) -> String {
        format!("{}runner:{id}", self.prefix)
    }

    /// The ids of the runners that have a heartbeat or left runs to take over (a set).
    pub fn runners(&self) -> String {
        format!("{}runners", self.prefix)
    }

    /// A runner's live runs: `JOB#N` -> the run's row (JSON), taken over when its heartbeat is gone.
    pub fn live(&self, id: &str) -> String {
        format!("{}live:{id}", self.prefix)
    }

    /// The last handled instant of every time trigger: `JOB FINGERPRINT` -> milliseconds since the epoch.
    pub fn handled(&self) -> String {
        format!("{}handled", self.prefix)
    }

    /// The field of a trigger in [`Keys::handled`].
    pub fn handled_field(job: &str, fingerprint: &str) -> String {
        format!("{job} {fingerprint}")
    }

    /// Who claimed a firing: the runner's id, kept past any instant another runner could ask for it.
    pub fn claim(&self, job: &str, fingerprint: &str, at_ms: i64) -> String {
        format!("{}claim:{job}:{fingerprint}:{at_ms}", self.prefix)
    }

    /// What every claim's key starts with.
    pub fn claim_prefix(&self) -> String {
        format!("{}claim:", self.prefix)
    }

    /// A job's run counter.
    pub fn counter(&self, job: &str) -> String {
        format!("{}runs:{job}", self.prefix)
    }

    /// The capped stream of history rows (a run's entry names its hash; a skip's or miss's holds its row).
    pub fn history(&self) -> String {
        format!("{}history", self.prefix)
    }

    /// The state of a join (`after` trigger `fingerprint` of job `job`): upstream position -> the run that reached
    /// it (JSON, as `FLOWRUN_UPSTREAM` names it).
    pub fn join(&self, job: &str, fingerprint: &str) -> String {
        format!("{}join:{job}:{fingerprint}", self.prefix)
    }

    /// A shared durable queue's stream (consumer group `readers`).
    pub fn queue(&self, channel: &str) -> String {
        format!("{}queue:{channel}", self.prefix)
    }

    /// A shared durable queue's message counter (`FLOWRUN_MESSAGE_SEQ`).
    pub fn queue_seq(&self, channel: &str) -> String {
        format!("{}queue-seq:{channel}", self.prefix)
    }

    /// One run: its row (`row`), its tries (`try:N`), the last of its output (`tail`), its runner (`runner`).
    pub fn run(&self, job: &str, number: u64) -> String {
        format!("{}run:{job}:{number}", self.prefix)
    }

    /// Manual firings asked by `flowrun trigger --store` (a list of JSON requests: `RPUSH` by the command, `BLPOP`
    /// by one runner).
    pub fn triggers(&self) -> String {
        format!("{}triggers", self.prefix)
    }

    /// Who has a trigger request: the runner that took it, or `cancelled` by the command that gave up on it
    /// (`SET NX`: whichever comes first holds).
    pub fn trigger_taken(&self, id: &str) -> String {
        format!("{}trigger:{id}", self.prefix)
    }

    /// The answers to a trigger request (a list: `RPUSH` by the runner, `BLPOP` by the command; it expires).
    pub fn reply(&self, id: &str) -> String {
        format!("{}reply:{id}", self.prefix)
    }
}
