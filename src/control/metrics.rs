//! `GET /metrics` (SPEC §5): Prometheus metrics through the `prometheus-client` crate. Counters and histograms
//! follow the events as they happen ([`Metrics::observe`], called where every event passes); gauges and the
//! channel counters are read from a status snapshot at each scrape, with the usual process metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::engine::requests::LiveStatus;
use crate::event::Event;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobOutcome {
    job: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelDirection {
    channel: String,
    direction: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type Buckets = fn() -> Histogram;

/// Lateness: from 0.1 ms (a good firing) to ~100 s (a catch-up), x2.5 a bucket.
fn lateness_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

/// Durations: from 10 ms to ~1.5 h, x3 a bucket.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 3.0, 13))
}

pub struct Metrics {
    registry: Registry,
    runs: Family<JobOutcome, Counter>,
    duration: Family<JobLabel, Histogram, Buckets>,
    lateness: Family<JobLabel, Histogram, Buckets>,
    missed: Family<JobLabel, Counter>,
    skipped: Family<JobLabel, Counter>,
    running: Family<JobLabel, Gauge>,
    last_success: Family<JobLabel, FloatGauge>,
    next_fire: Family<JobLabel, FloatGauge>,
    paused: Family<JobLabel, Gauge>,
    tries: Family<JobOutcome, Counter>,
    channel_messages: Family<ChannelDirection, Counter>,
    channel_waiting: Family<ChannelLabel, Gauge>,
    /// A durable queue's store: messages not done, and bytes on disk.
    channel_stored: Family<ChannelLabel, Gauge>,
    channel_store_bytes: Family<ChannelLabel, Gauge>,
    cpu: Counter<f64, AtomicU64>,
    resident: Gauge,
    open_fds: Gauge,
    start_time: FloatGauge,
    /// In a cluster (SPEC §9): 1 while the cluster's store answers, else 0.
    store_up: Gauge,
    store_answers: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// What the monotonic counters read from snapshots had reached at the last scrape.
    seen: Mutex<HashMap<String, f64>>,
    /// The jobs and channels of the last scrape: the gauges of those a reload removed go with them.
    present: Mutex<(Vec<String>, Vec<String>)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A durable queue's store: messages not done and bytes on disk.
    fn store_gauges(&self, c: &crate::engine::requests::LiveChannel) {
        if let Some(store) = &c.store {
            let label = ChannelLabel {
                channel: c.channel.clone(),
            };
            self.channel_stored
                .get_or_create(&label)
                .set(store.depth as i64);
            self.channel_store_bytes
                .get_or_create(&label)
                .set(store.bytes_on_disk as i64);
        }
    }

    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            lateness: Family::new_with_constructor(lateness_histogram),
            missed: Family::default(),
            skipped: Family::default(),
            running: Family::default(),
            last_success: Family::default(),
            next_fire: Family::default(),
            paused: Family::default(),
            tries: Family::default(),
            channel_messages: Family::default(),
            channel_waiting: Family::default(),
            channel_stored: Family::default(),
            channel_store_bytes: Family::default(),
            cpu: Counter::default(),
            resident: Gauge::default(),
            open_fds: Gauge::default(),
            start_time: Gauge::default(),
            store_up: Gauge::default(),
            store_answers: None,
            seen: Mutex::new(HashMap::new()),
            present: Mutex::new((Vec::new(), Vec::new())),
        };
        let r = &mut m.registry;
        r.register(
            "flowrun_runs",
            "Runs that ended, by job and outcome (succeeded, failed, timeout, stopped, spawn-failed)",
            m.runs.clone(),
        );
        r.register(
            "flowrun_tries",
            "Tries that ended (a run's first and each retry), by job and outcome",
            m.tries.clone(),
        );
        r.register(
            "flowrun_run_duration_seconds",
            "How long runs lived",
            m.duration.clone(),
        );
        r.register(
            "flowrun_fire_lateness_seconds",
            "From a firing's scheduled instant to its run's start",
            m.lateness.clone(),
        );
        r.register("flowrun_runs_running", "Live runs", m.running.clone());
        r.register(
            "flowrun_job_paused",
            "1 while the job is paused (flowrun pause), else 0",
            m.paused.clone(),
        );
        r.register(
            "flowrun_firings_missed",
            "Firings handled later than misfire_grace",
            m.missed.clone(),
        );
        r.register(
            "flowrun_firings_skipped",
            "Firings skipped (max_instances, dead joins)",
            m.skipped.clone(),
        );
        r.register(
            "flowrun_last_success_timestamp_seconds",
            "When a run of the job last succeeded (Unix time; remembered across restarts with state)",
            m.last_success.clone(),
        );
        r.register(
            "flowrun_next_fire_timestamp_seconds",
            "The job's next time firing (Unix time)",
            m.next_fire.clone(),
        );
        r.register(
            "flowrun_channel_messages",
            "Messages a channel took in (direction=in) and handed out (direction=out)",
            m.channel_messages.clone(),
        );
        r.register(
            "flowrun_channel_waiting",
            "Messages waiting in a channel",
            m.channel_waiting.clone(),
        );
        r.register(
            "flowrun_channel_stored",
            "Messages a durable queue keeps that are not done (waiting or with a reader)",
            m.channel_stored.clone(),
        );
        r.register(
            "flowrun_channel_store_bytes",
            "Bytes a durable queue's store takes on disk",
            m.channel_store_bytes.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time of the runner",
            m.cpu.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the runner",
            m.resident.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the runner",
            m.open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When the runner started (Unix time)",
            m.start_time.clone(),
        );
        m
    }

    /// Count what an event says (called for every event, on the dispatcher thread: a few atomic adds).
    /// A runner of a cluster: `flowrun_store_up` says whether its store answers (`answers`, kept by the
    /// claimer and the heartbeat).
    pub fn with_store(mut self, answers: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Metrics {
        self.registry.register(
            "flowrun_store_up",
            "1 while the cluster's store (Redis) answers this runner, else 0",
            self.store_up.clone(),
        );
        self.store_answers = Some(answers);
        self
    }

    pub fn observe(&self, event: &Event) {
        let job = |name: &str| JobLabel {
            job: name.to_string(),
        };
        match event {
            Event::RunStart {
                job: name,
                lateness_us: Some(us),
                ..
            } => self
                .lateness
                .get_or_create(&job(name))
                .observe(*us.max(&0) as f64 / 1e6),
            Event::RunExit(x) => {
                let by_outcome = JobOutcome {
                    job: x.job.clone(),
                    outcome: x.outcome.to_string(),
                };
                // A run counts once, by its last try's outcome; every try counts as a try.
                if x.final_try {
                    self.runs.get_or_create(&by_outcome).inc();
                }
                self.tries.get_or_create(&by_outcome).inc();
                self.duration
                    .get_or_create(&job(&x.job))
                    .observe(x.duration_ms as f64 / 1000.0);
            }
            Event::RunMissed {
                job: name, count, ..
            } => {
                self.missed.get_or_create(&job(name)).inc_by(*count);
            }
            Event::RunSkipped { job: name, .. } => {
                self.skipped.get_or_create(&job(name)).inc();
            }
            _ => {}
        }
    }

    /// The text of `/metrics` for this snapshot of the runner.
    pub fn render(&self, status: &LiveStatus) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for j in &status.jobs {
            let label = JobLabel { job: j.job.clone() };
            // Every job has its series from the first scrape, so alerts and rates see zeros, not gaps.
            let _ = self.runs.get_or_create(&JobOutcome {
                job: j.job.clone(),
                outcome: "succeeded".into(),
            });
            let _ = self.missed.get_or_create(&label);
            let _ = self.skipped.get_or_create(&label);
            self.running
                .get_or_create(&label)
                .set(j.running.len() as i64);
            self.paused.get_or_create(&label).set(j.paused as i64);
            if let Some(t) = j.last_success {
                self.last_success
                    .get_or_create(&label)
                    .set(t.timestamp_micros() as f64 / 1e6);
            }
            match j.next {
                Some(t) => {
                    self.next_fire
                        .get_or_create(&label)
                        .set(t.timestamp_micros() as f64 / 1e6);
                }
                None => {
                    self.next_fire.remove(&label);
                }
            }
        }
        for c in &status.channels {
            for (direction, value) in [("in", c.counts.taken_in), ("out", c.counts.out)] {
                let key = format!("{}\u{0}{direction}", c.channel);
                let before = seen.insert(key, value as f64).unwrap_or(0.0) as u64;
                self.channel_messages
                    .get_or_create(&ChannelDirection {
                        channel: c.channel.clone(),
                        direction: direction.into(),
                    })
                    .inc_by(value.saturating_sub(before));
            }
            self.channel_waiting
                .get_or_create(&ChannelLabel {
                    channel: c.channel.clone(),
                })
                .set(c.counts.left as i64);
            self.store_gauges(c);
        }
        let jobs: Vec<String> = status.jobs.iter().map(|j| j.job.clone()).collect();
        let channels: Vec<String> = status.channels.iter().map(|c| c.channel.clone()).collect();
        let mut present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        for gone in present.0.iter().filter(|j| !jobs.contains(j)) {
            let label = JobLabel { job: gone.clone() };
            self.running.remove(&label);
            self.next_fire.remove(&label);
            self.last_success.remove(&label);
            self.paused.remove(&label);
        }
        for gone in present.1.iter().filter(|c| !channels.contains(c)) {
            let label = ChannelLabel {
                channel: gone.clone(),
            };
            self.channel_waiting.remove(&label);
            self.channel_stored.remove(&label);
            self.channel_store_bytes.remove(&label);
        }
        *present = (jobs, channels);
        drop(present);
        let process = crate::control::procfs::read();
        let before = seen
            .insert("cpu".into(), process.cpu_seconds)
            .unwrap_or(0.0);
        self.cpu.inc_by((process.cpu_seconds - before).max(0.0));
        self.resident.set(process.resident_bytes as i64);
        if let Some(answers) = &self.store_answers {
            let up = answers.load(std::sync::atomic::Ordering::Acquire);
            self.store_up.set(i64::from(up));
        }
        self.open_fds.set(process.open_fds as i64);
        self.start_time
            .set(status.started.timestamp_micros() as f64 / 1e6);
        drop(seen);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("metrics encode into a String");
        text
    }
}
