//! Unit tests of the decision core: a workflow's text is validated into a plan, the core is fed inputs at
//! instants the test chooses, and what it decided is read back as a trace of short lines (`start a#1`,
//! `exit a#1 failed`, `signal 1001 TERM`...). No process, no thread, no sleep: time is a number the test moves.
//! The world is a few vectors (`Fake`); timers armed by the core fire when the test's clock passes them.

mod claims;
mod firing;
mod joins;
mod lifecycle;
mod messages;
mod pausing;
mod recording;
mod reloads;

use chrono::{DateTime, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Core, Effect, Input, Manual, Now, Setup, Taken, Urgency, World};
use crate::engine::core::runs::{Batch, RunId};
use crate::engine::supervise::RunEnd;
use crate::engine::Stop;
use crate::event::Event;
use crate::plan::{ChannelId, JobId, Plan};
use crate::store::Op;
use crate::text::source::Source;

/// The channels and the store, as vectors.
#[derive(Default)]
pub(super) struct Fake {
    /// Per channel, its waiting messages (each a line with its newline).
    pub queues: HashMap<ChannelId, VecDeque<Vec<u8>>>,
    pub closed: HashSet<ChannelId>,
    pub taken_in: HashMap<ChannelId, u64>,
    /// With a state store: what was recorded, and how urgently.
    pub stored: bool,
    pub ops: Vec<(Op, Urgency)>,
    /// The store cannot be written (a full disk).
    pub failing: bool,
    pub commits: usize,
    /// How many of `ops` the last successful commit put on disk.
    pub on_disk: usize,
    /// Hand-overs so far (each commit is one), and the last committed (as the store's writer numbers them).
    handed: u64,
    committed: u64,
    /// Messages sent to dead letters, by channel.
    pub dead: Vec<(ChannelId, usize)>,
    /// The batches of `each` runs that were done, in order.
    pub done: Vec<Vec<u8>>,
    pub shut: bool,
    pub random: f64,
}

impl World for Fake {
    fn take(&mut self, channel: ChannelId, _reader: JobId, max: usize) -> Option<Taken> {
        let queue = self.queues.entry(channel).or_default();
        let n = queue.len().min(max);
        if n == 0 {
            return None;
        }
        Some(Taken {
            data: queue.drain(..n).flatten().collect(),
            count: n,
            seqs: Vec::new(),
            delivery: 1,
        })
    }

    fn done(&mut self, batch: &Batch) {
        self.done.push(batch.data.to_vec());
    }

    fn give_back(&mut self, _reader: JobId, batch: &Batch) -> bool {
        let queue = self.queues.entry(batch.from).or_default();
        let lines: Vec<Vec<u8>> = batch
            .data
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        for line in lines.into_iter().rev() {
            queue.push_front(line);
        }
        true
    }

    fn unsettled(&self, channel: ChannelId, _reader: JobId) -> bool {
        !self.closed.contains(&channel) || self.queues.get(&channel).is_some_and(|q| !q.is_empty())
    }

    fn input_over(&self, channel: ChannelId, reader: JobId) -> bool {
        !self.unsettled(channel, reader)
    }

    fn pipe_readers_gone(&self, _channel: ChannelId) -> bool {
        false
    }

    fn closed(&self, channel: ChannelId) -> bool {
        self.closed.contains(&channel)
    }

    fn close(&mut self, channel: ChannelId) -> u64 {
        self.closed.insert(channel);
        self.taken_in.get(&channel).copied().unwrap_or(0)
    }

    fn reader_done(&mut self, _channel: ChannelId, _reader: JobId) {}

    fn readers_gone(&mut self, _channel: ChannelId) {}

    fn reader_back(&mut self, _channel: ChannelId, _reader: JobId) {}

    fn rewire(&mut self, _plan: Arc<Plan>, _rebuilt: &[ChannelId]) {}

    fn left(&self, channel: ChannelId) -> u64 {
        self.queues.get(&channel).map_or(0, |q| q.len() as u64)
    }

    fn shut(&mut self) {
        self.shut = true;
    }

    fn dead_letter(&mut self, channel: ChannelId, _data: &[u8], count: usize) {
        self.dead.push((channel, count));
    }

    fn stored(&self) -> bool {
        self.stored
    }

    fn record(&mut self, op: Op, urgency: Urgency) {
        if self.stored {
            self.ops.push((op, urgency));
        }
    }

    fn commit_all(&mut self) -> bool {
        if !self.stored {
            return true;
        }
        self.commits += 1;
        self.handed += 1;
        if self.failing {
            return false;
        }
        self.committed = self.handed;
        self.on_disk = self.ops.len();
        true
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    fn next_seq(&self) -> u64 {
        self.handed + 1
    }

    fn hand_over_if_durable(&mut self) {}

    fn log_written(&self, id: RunId) -> Option<String> {
        Some(format!("logs/{id}.log"))
    }

    fn random(&mut self) -> f64 {
        self.random
    }
}

/// A core under test, its clock, and what it decided.
pub(super) struct Harness {
    pub core: Core<Fake>,
    t0: Instant,
    pub utc0: DateTime<Utc>,
    /// Time since the start of the test.
    pub elapsed: Duration,
    /// Timers armed and not yet fired or called off: key to the instant (elapsed) they fire at.
    pub armed: BTreeMap<u64, Duration>,
    trace: Vec<String>,
    /// Answer spawns at once (else a test answers them itself).
    pub auto_spawn: bool,
    /// Spawns asked for and not answered (with `auto_spawn` off).
    pub spawns: Vec<RunId>,
    /// The events emitted, whole.
    pub events: Vec<Event>,
    /// For each spawn, how many of the world's records were on disk then.
    pub on_disk_at_spawns: Vec<usize>,
    /// Inputs the shell would deliver later (wakes, the end of a run that could not start, env reads).
    later: VecDeque<Input>,
    /// Claims and numbers asked of the cluster's store and not answered yet (keys, oldest first).
    pub asked: VecDeque<u64>,
}

/// A plan from a workflow's text (it must be valid).
pub(super) fn plan(yaml: &str) -> Arc<Plan> {
    let source = Source::new("test.yaml", yaml.to_string());
    let validated = crate::validate::validate(&source, Utc::now());
    match validated.plan {
        Some(plan) => Arc::new(plan),
        None => panic!("invalid test workflow: {:?}", validated.diagnostics),
    }
}

/// A process's exit with `code`.
pub(super) fn exited(code: i32) -> RunEnd {
    RunEnd {
        status: Ok(ExitStatus::from_raw(code << 8)),
        pump: None,
        taken_back: 0,
        limit_hit: None,
    }
}

/// A process killed by `signal`.
pub(super) fn killed(signal: i32) -> RunEnd {
    RunEnd {
        status: Ok(ExitStatus::from_raw(signal)),
        pump: None,
        taken_back: 0,
        limit_hit: None,
    }
}

impl Harness {
    /// A core for `yaml`, started, with no state store.
    pub fn new(yaml: &str) -> Harness {
        Harness::with(yaml, Setup::default(), false)
    }

    /// A core for `yaml`, started, with a state store whose first blocks of numbers are on disk.
    pub fn stored(yaml: &str) -> Harness {
        let setup = Setup {
            numbers_on_disk: true,
            ..Setup::default()
        };
        Harness::with(yaml, setup, true)
    }

    pub fn with(yaml: &str, setup: Setup, stored: bool) -> Harness {
        let mut h = Harness::unstarted(yaml, setup, stored);
        h.core.start(h.now(), None);
        h.pump();
        h
    }

    /// Not started yet (a test may prepare the world first).
    pub fn unstarted(yaml: &str, setup: Setup, stored: bool) -> Harness {
        let utc0 = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let t0 = Instant::now();
        let world = Fake {
            stored,
            random: 0.5,
            ..Fake::default()
        };
        let now = Now {
            utc: utc0,
            mono: t0,
        };
        Harness {
            core: Core::new(plan(yaml), world, setup, now),
            t0,
            utc0,
            elapsed: Duration::ZERO,
            armed: BTreeMap::new(),
            trace: Vec::new(),
            auto_spawn: true,
            spawns: Vec::new(),
            events: Vec::new(),
            on_disk_at_spawns: Vec::new(),
            later: VecDeque::new(),
            asked: VecDeque::new(),
        }
    }

    pub fn now(&self) -> Now {
        Now {
            utc: self.utc0 + chrono::Duration::from_std(self.elapsed).unwrap(),
            mono: self.t0 + self.elapsed,
        }
    }

    pub fn job(&self, name: &str) -> JobId {
        self.core.plan.job_id(name).expect("a job of the plan")
    }

    pub fn channel(&self, name: &str) -> ChannelId {
        let found = self.core.plan.channels.iter().position(|c| c.name == name);
        found.expect("a channel of the plan")
    }

    /// Feed one input, then carry out what follows, as the shell does.
    pub fn input(&mut self, input: Input) {
        self.core.handle(input, self.now());
        self.pump();
    }

    /// The cluster's store answers the oldest question asked of it.
    pub fn answer(&mut self, answer: crate::cluster::Answer) {
        let key = self
            .asked
            .pop_front()
            .expect("a question asked of the store");
        self.input(Input::Claimed { key, answer });
    }

    /// Let `d` pass: timers due meanwhile fire in their order, then the timetable is looked at.
    pub fn advance(&mut self, d: Duration) {
        let until = self.elapsed + d;
        loop {
            let next = self
                .armed
                .iter()
                .filter(|(_, at)| **at <= until)
                .min_by_key(|(key, at)| (**at, **key))
                .map(|(key, at)| (*key, *at));
            let Some((key, at)) = next else { break };
            self.armed.remove(&key);
            self.elapsed = self.elapsed.max(at);
            self.input(Input::Due(key));
        }
        self.elapsed = until;
        self.input(Input::Timer);
    }

    /// Firings waiting for a worker, per job (as the snapshot shows them).
    pub fn waiting(&self) -> Vec<usize> {
        self.core
            .snapshot()
            .jobs
            .iter()
            .map(|j| j.waiting)
            .collect()
    }

    /// The live runs of a job, oldest first.
    pub fn runs_of(&self, name: &str) -> Vec<RunId> {
        let job = self.job(name);
        let mut ids: Vec<RunId> = self
            .core
            .runs
            .iter()
            .filter(|(_, r)| r.job == job)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The oldest live run of a job ends with `end`.
    pub fn end(&mut self, name: &str, end: RunEnd) {
        let id = *self.runs_of(name).first().expect("a live run");
        self.input(Input::Exited { id, end });
    }

    pub fn exit(&mut self, name: &str, code: i32) {
        self.end(name, exited(code));
    }

    pub fn stop(&mut self) {
        self.input(Input::Stop(Stop::Signal("SIGTERM")));
    }

    /// What was decided since the last look.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    /// Whether the trace since the last look has this line; it is looked at whole (and forgotten).
    pub fn saw(&mut self, line: &str) -> bool {
        let trace = self.take();
        let found = trace.iter().any(|l| l == line);
        if !found {
            eprintln!("not in the trace: {line}\n{trace:#?}");
        }
        found
    }

    /// The pid a spawned run gets.
    pub fn pid(id: RunId) -> u32 {
        1000 + id as u32
    }

    /// Carry out the effects, and deliver what the shell would deliver later as inputs of their own.
    pub fn pump(&mut self) {
        loop {
            while let Some(effect) = self.core.out.pop_front() {
                self.apply(effect);
            }
            match self.later.pop_front() {
                Some(input) => self.core.handle(input, self.now()),
                None => break,
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Emit(event) => {
                if let Some(line) = trace_of(&event) {
                    self.trace.push(line);
                }
                self.events.push(event);
            }
            Effect::Notice(text) => self.trace.push(format!("notice: {text}")),
            Effect::Arm { key, delay } => {
                self.armed.insert(key, self.elapsed + delay);
            }
            Effect::Disarm(key) => {
                self.armed.remove(&key);
            }
            Effect::Signal { pid, signal } => {
                let name = match signal {
                    libc::SIGTERM => "TERM",
                    libc::SIGKILL => "KILL",
                    _ => "other",
                };
                self.trace.push(format!("signal {pid} {name}"));
            }
            Effect::Spawn { id, .. } => {
                self.on_disk_at_spawns.push(self.core.world.on_disk);
                match self.auto_spawn {
                    true => self.core.spawned(id, Harness::pid(id), self.now()),
                    false => self.spawns.push(id),
                }
            }
            Effect::Exit { id, reason } => self.later.push_back(Input::Exited {
                id,
                end: RunEnd::not_started(reason),
            }),
            Effect::ReadEnv(job) => self.trace.push(format!("read env {job}")),
            Effect::Wake(c) => self.later.push_back(Input::Wake(c)),
            Effect::StopProbe(id) => self.trace.push(format!("stop probe {id}")),
            Effect::Ended { .. } => {}
            Effect::Claim {
                key,
                job,
                at,
                number,
                ..
            } => {
                let name = &self.core.plan.jobs[job].name;
                let at = (at - self.utc0).num_milliseconds();
                let what = if number { "firing" } else { "miss" };
                self.trace.push(format!("claim {what} {name} at {at}ms"));
                self.asked.push_back(key);
            }
            Effect::Reclaim { key, claim, .. } => {
                self.trace.push(format!("reclaim {claim}"));
                self.asked.push_back(key);
            }
            Effect::JoinEnd {
                key,
                job,
                positions,
                ..
            } => {
                let name = &self.core.plan.jobs[job].name;
                self.trace.push(format!("join {name} hears {positions:?}"));
                self.asked.push_back(key);
            }
            Effect::Number { key, job } => {
                let name = &self.core.plan.jobs[job].name;
                self.trace.push(format!("number {name}"));
                self.asked.push_back(key);
            }
            Effect::Manual(news) => self.trace.push(match news {
                Manual::Queued(key) => format!("manual {key} queued"),
                Manual::Skipped(key, why) => format!("manual {key} skipped: {why}"),
                Manual::Started { key, number, .. } => format!("manual {key} started #{number}"),
                Manual::Ended(_, ended) => format!("manual ended #{} {}", ended.run, ended.outcome),
                Manual::Retried(_) => "manual retried".to_string(),
            }),
        }
    }
}

/// An event as a short line (`None`: not traced).
fn trace_of(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStart {
            job, run, attempt, ..
        } if *attempt > 1 => {
            format!("start {job}#{run} try {attempt}")
        }
        Event::RunStart { job, run, .. } => format!("start {job}#{run}"),
        Event::RunExit(exit) => format!("exit {}#{} {}", exit.job, exit.run, exit.outcome),
        Event::RunSkipped { job, why, .. } => format!("skipped {job}: {}", why.text()),
        Event::RunMissed { job, count, .. } => format!("missed {job} x{count}"),
        Event::MessageDead {
            job,
            run,
            channel,
            messages,
        } => format!("dead {job}#{run} {messages} to {channel}"),
        Event::RunRestart { job, delay, .. } => format!("restart {job} in {delay:?}"),
        Event::RestartsExhausted { job, max, .. } => format!("exhausted {job} after {max}"),
        Event::RunRetry {
            job,
            run,
            next_attempt,
            backoff,
        } => format!("retry {job}#{run} try {next_attempt} in {backoff:?}"),
        Event::RunTimeout { job, run, .. } => format!("timeout {job}#{run}"),
        Event::RunReady { job, run, .. } => format!("ready {job}#{run}"),
        Event::RunNotReady { job, run, .. } => format!("not ready {job}#{run}"),
        Event::RunUnhealthy { job, run, .. } => format!("unhealthy {job}#{run}"),
        Event::ChannelClosed { channel, messages } => format!("closed {channel} {messages}"),
        Event::ChannelTakeback {
            job, run, messages, ..
        } => format!("taken back {job}#{run} {messages}"),
        Event::RunnerStopping { reason, live_runs } => format!("stopping {reason} {live_runs}"),
        Event::ReloadApplied {
            added,
            removed,
            changed,
        } => format!("reload +{added:?} -{removed:?} ~{changed:?}"),
        Event::ReloadRejected { summary, .. } => format!("reload rejected: {summary}"),
        _ => return None,
    })
}
