//! The plan built from a document the rules found sound: names become indices, defaults are filled in, relative
//! paths are read from the file's folder. Apart from the checks (`validate`), which never build anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Resolved, Rules};
use crate::document::*;
use crate::plan::{self, Plan, TimeSpec};
use crate::values::system_zone;

/// Channel name -> its index in the plan.
type ChannelIds = HashMap<String, usize>;

impl<'d> Rules<'d, '_> {
    /// The plan, or `None` when a name does not resolve (an error the rules reported).
    pub(super) fn build_plan(&self, path: &Path) -> Option<Plan> {
        let executors = self.plan_executors();
        let channels = self.plan_channels();
        let ids: ChannelIds = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let folder = plan_folder(path);
        let mut jobs = self
            .jobs
            .iter()
            .map(|r| self.plan_job(r, &ids, &executors, &folder))
            .collect::<Option<Vec<_>>>()?;
        // A failure handler (the `on_failure` of some job) without `trigger:` runs for failures, not at the start.
        let handlers: std::collections::HashSet<usize> =
            jobs.iter().filter_map(|j| j.on_failure).collect();
        for h in handlers {
            if self.jobs[h].job.trigger.is_none() {
                jobs[h].triggers.clear();
            }
        }
        let name = self
            .doc
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "workflow".into())
            });
        let mut plan = Plan {
            name,
            path: path.to_path_buf(),
            executors,
            channels,
            jobs,
        };
        // Who reads and writes each channel, in job order (a broadcast's copies follow its readers' order).
        plan.wire_channels();
        Some(plan)
    }

    /// `default` first (declared or not), then the declared executors in their order.
    fn plan_executors(&self) -> Vec<plan::Executor> {
        let mut executors = vec![plan::Executor {
            name: "default".into(),
            max_workers: plan::DEFAULT_WORKERS,
        }];
        for (name, spec) in self.doc.executors.iter().flat_map(|d| d.0.iter()) {
            let max_workers = spec
                .max_workers
                .as_ref()
                .map_or(plan::DEFAULT_WORKERS, |w| w.value as usize);
            if name.value == "default" {
                executors[0].max_workers = max_workers;
            } else {
                executors.push(plan::Executor {
                    name: name.value.clone(),
                    max_workers,
                });
            }
        }
        executors
    }

    /// The declared channels with their defaults (their readers and writers are wired from the jobs).
    fn plan_channels(&self) -> Vec<plan::Channel> {
        self.channels()
            .iter()
            .map(|(name, spec)| plan::Channel {
                name: name.value.clone(),
                kind: spec.kind.as_ref().map_or(ChannelKind::Queue, |k| k.value),
                capacity: spec
                    .capacity
                    .as_ref()
                    .map_or(plan::DEFAULT_CAPACITY, |c| c.value as usize),
                max_message: spec
                    .max_message
                    .as_ref()
                    .map_or(plan::DEFAULT_MAX_MESSAGE, |m| m.value.0 as usize),
                writers: Vec::new(),
                readers: Vec::new(),
                retired: false,
            })
            .collect()
    }

    /// One job of the plan.
    fn plan_job(
        &self,
        r: &Resolved<'d>,
        ids: &ChannelIds,
        executors: &[plan::Executor],
        folder: &Path,
    ) -> Option<plan::Job> {
        let o = &r.o;
        let ch = |s: &Option<Sp<String>>| -> Option<Option<usize>> {
            match s {
                None => Some(None),
                Some(n) => ids.get(&n.value).map(|&i| Some(i)),
            }
        };
        let mut triggers = Self::triggers(r.job)
            .map(|t| self.plan_trigger(&t.value, ids))
            .collect::<Option<Vec<_>>>()?;
        if r.job.trigger.is_none() {
            triggers.push(plan::Trigger::Start);
        }
        let executor_name = o.executor.as_ref().map_or("default", |e| e.value.as_str());
        let cwd = match &o.cwd {
            Some(c) if Path::new(&c.value).is_absolute() => c.value.clone().into(),
            Some(c) => folder.join(&c.value),
            None => folder.to_path_buf(),
        };
        Some(plan::Job {
            name: r.name.value.clone(),
            command: command(&r.job.run.value),
            cwd,
            env_files: env_files(o, folder),
            env: env_of(o),
            triggers,
            executor: executors.iter().position(|e| e.name == executor_name)?,
            stdin: ch(&r.job.stdin)?,
            stdout: ch(&r.job.stdout)?,
            max_instances: o.max_instances.as_ref().map_or(1, |m| m.value as usize),
            coalesce: o.coalesce.as_ref().is_none_or(|c| c.value),
            misfire_grace: o
                .misfire_grace
                .as_ref()
                .map_or(plan::DEFAULT_MISFIRE_GRACE, |d| d.value.0),
            timeout: o.timeout.as_ref().map(|d| d.value.0),
            retry: o.retry.as_ref().map(|r| Box::new(retry(&r.value))),
            restart: o
                .restart
                .as_ref()
                .map_or(Restart::Never, |r| r.value.policy()),
            restart_limit: o.restart.as_ref().and_then(|r| restart_limit(&r.value)),
            stop_grace: o
                .stop_grace
                .as_ref()
                .map_or(plan::DEFAULT_STOP_GRACE, |d| d.value.0),
            dead_letter: ch(&o.dead_letter)?,
            ready: o.ready.as_ref().and_then(|r| probe(&r.value)).map(Box::new),
            alive: o
                .alive
                .as_ref()
                .and_then(|a| liveness(&a.value))
                .map(Box::new),
            limits: o
                .limits
                .as_ref()
                .map(|l| limits(&l.value))
                .unwrap_or_default(),
            user: o.user.as_ref().map(|u| u.value.clone()),
            enabled: r.job.enabled.as_ref().is_none_or(|e| e.value),
            // A handler's own failures do not fire it again.
            on_failure: o
                .on_failure
                .as_ref()
                .and_then(|h| self.job_index(&h.value))
                .filter(|&h| self.jobs[h].name.value != r.name.value),
            retired: false,
        })
    }

    /// One trigger of a job, its names resolved and its times in their zones.
    fn plan_trigger(&self, spec: &TriggerSpec, ids: &ChannelIds) -> Option<plan::Trigger> {
        let jitter =
            |j: &Option<Sp<Dur>>| j.as_ref().map_or(std::time::Duration::ZERO, |j| j.value.0);
        Some(match spec {
            TriggerSpec::Start(_) => plan::Trigger::Start,
            TriggerSpec::Cron(c) => plan::Trigger::Time {
                rule: TimeSpec::Cron {
                    cron: c.cron.value.cron,
                    zone: c.timezone.as_ref().map_or_else(system_zone, |z| z.value.0),
                    text: c.cron.value.text.clone(),
                },
                jitter: jitter(&c.jitter),
            },
            TriggerSpec::Interval(i) => {
                let zone = i.timezone.as_ref().map_or_else(system_zone, |z| z.value.0);
                plan::Trigger::Time {
                    rule: TimeSpec::Interval {
                        every: i.interval.value.0,
                        start: i.start.as_ref().map(|s| s.value.0.resolve(zone)),
                        end: i.end.as_ref().map(|s| s.value.0.resolve(zone)),
                        zone,
                    },
                    jitter: jitter(&i.jitter),
                }
            }
            TriggerSpec::At(a) => {
                let zone = a.timezone.as_ref().map_or_else(system_zone, |z| z.value.0);
                plan::Trigger::Time {
                    rule: TimeSpec::At {
                        at: a.at.value.0.resolve(zone),
                        zone,
                    },
                    jitter: std::time::Duration::ZERO,
                }
            }
            TriggerSpec::After(a) => plan::Trigger::After {
                any: a.after.value.any,
                jobs: a
                    .after
                    .value
                    .names
                    .0
                    .iter()
                    .map(|n| self.job_index(&n.value))
                    .collect::<Option<Vec<_>>>()?,
                status: a.status.as_ref().map_or(Status::Success, |s| s.value),
            },
            TriggerSpec::Each(e) => plan::Trigger::Each {
                channel: *ids.get(&e.each.value)?,
                batch: e.batch.as_ref().map_or(1, |b| b.value as usize),
            },
        })
    }
}

/// The folder relative names in the file are read from: the file's own.
pub(super) fn plan_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder.to_path_buf(),
        _ => ".".into(),
    }
}

fn command(run: &RunSpec) -> plan::Command {
    match run {
        RunSpec::Shell(s) => plan::Command::Shell(s.clone()),
        RunSpec::Argv(a) => plan::Command::Argv(a.iter().map(|s| s.value.clone()).collect()),
    }
}

fn retry(spec: &RetrySpec) -> plan::Retry {
    plan::Retry {
        on: spec
            .on
            .as_ref()
            .map(|on| on.value.0.iter().map(|c| c.value.0 as i32).collect()),
        attempts: spec.attempts.value,
        backoff: spec
            .backoff
            .as_ref()
            .map_or(plan::DEFAULT_BACKOFF, |b| b.value.0),
    }
}

fn restart_limit(spec: &RestartSpec) -> Option<plan::RestartLimit> {
    match spec {
        RestartSpec::Limited(l) => l.max.as_ref().map(|m| plan::RestartLimit {
            max: m.value,
            window: l.window.as_ref().map(|w| w.value.0),
        }),
        RestartSpec::Policy(_) => None,
    }
}

/// A decoded `ready` (the decoder made sure exactly one kind is given).
/// `None` for a probe the decoder found invalid (and reported: no plan is built then).
/// A job's `env_file`s, relative to the workflow's folder.
fn env_files(o: &JobOptions, folder: &Path) -> Vec<std::path::PathBuf> {
    o.env_file
        .as_ref()
        .map(|f| f.value.0.iter().map(|p| folder.join(&p.value)).collect())
        .unwrap_or_default()
}

/// A job's `env`, as written.
fn env_of(o: &JobOptions) -> Vec<(String, String)> {
    o.env
        .as_ref()
        .map(|e| {
            e.0.iter()
                .map(|(k, v)| (k.value.clone(), v.value.0.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn limits(spec: &LimitsSpec) -> plan::Limits {
    plan::Limits {
        memory: spec.memory.as_ref().map(|m| m.value.0),
        cpu_millis: spec
            .cpu
            .as_ref()
            .map(|c| (c.value.0 * 1000.0).round() as u32),
        nofile: spec.nofile.as_ref().map(|n| n.value as u64),
        nproc: spec.nproc.as_ref().map(|n| n.value as u64),
        nice: spec.nice.as_ref().map(|n| n.value),
    }
}

fn liveness(spec: &AliveSpec) -> Option<plan::Liveness> {
    let check = if let Some(http) = &spec.http {
        plan::LiveCheck::Probe(plan::Check::Http(http.value.0.clone()))
    } else if let Some(tcp) = &spec.tcp {
        plan::LiveCheck::Probe(plan::Check::Tcp(tcp.value.clone()))
    } else if let Some(exec) = &spec.exec {
        plan::LiveCheck::Probe(plan::Check::Exec(command(&exec.value)))
    } else {
        plan::LiveCheck::Silence(spec.log_silence.as_ref()?.value.0)
    };
    Some(plan::Liveness {
        check,
        interval: spec
            .interval
            .as_ref()
            .map_or(plan::DEFAULT_ALIVE_INTERVAL, |d| d.value.0),
        failures: spec
            .failures
            .as_ref()
            .map_or(plan::DEFAULT_ALIVE_FAILURES, |f| f.value),
    })
}

fn probe(spec: &ReadySpec) -> Option<plan::Probe> {
    let check = if let Some(log) = &spec.log {
        plan::Check::Log(log.value.regex.clone())
    } else if let Some(http) = &spec.http {
        plan::Check::Http(http.value.0.clone())
    } else if let Some(tcp) = &spec.tcp {
        plan::Check::Tcp(tcp.value.clone())
    } else {
        plan::Check::Exec(command(&spec.exec.as_ref()?.value))
    };
    Some(plan::Probe {
        check,
        interval: spec
            .interval
            .as_ref()
            .map_or(plan::DEFAULT_PROBE_INTERVAL, |d| d.value.0),
        timeout: spec
            .timeout
            .as_ref()
            .map_or(plan::DEFAULT_PROBE_TIMEOUT, |d| d.value.0),
    })
}
