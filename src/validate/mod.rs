//! The rules between the parts of a workflow (SPEC §2.6): channels, executors, `after` links, pipes, conflicts.
//! Every problem is collected; a [`Plan`] is built only when there is no error.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::path::Path;

use crate::diagnostics::{suggestion_help, Code, Diagnostic, Severity};
use crate::document::decode::decode;
use crate::document::*;
use crate::plan::{self, Plan};
use crate::text::source::{Source, Span};
use crate::values::system_zone;

mod build;

use build::plan_folder;

/// What validation found in one file.
#[derive(Debug)]
pub struct Validated {
    pub diagnostics: Vec<Diagnostic>,
    pub plan: Option<Plan>,
}

impl Validated {
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
            .count()
    }
    /// Hints are neither errors nor warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Warning)
            .count()
    }
}

/// Validate a workflow read from `source`; `now` decides what is "already past".
pub fn validate(source: &Source, now: DateTime<Utc>) -> Validated {
    validate_as(source, now, Purpose::Plan)
}

/// Only the diagnostics, for `flowrun validate`: no plan is built, and the spanned tree and the document are not
/// freed (the command ends right after; freeing a 10,000-job tree node by node costs more than the rules).
pub fn check(source: &Source, now: DateTime<Utc>) -> Vec<Diagnostic> {
    validate_as(source, now, Purpose::Check).diagnostics
}

#[derive(PartialEq)]
enum Purpose {
    Plan,
    Check,
}

fn validate_as(source: &Source, now: DateTime<Utc>, purpose: Purpose) -> Validated {
    let mut diagnostics = Vec::new();
    let root = match crate::text::yaml::parse(&source.text) {
        Ok(root) => root,
        Err(e) => {
            let span = if e.span.offset == 0 && e.line > 0 {
                Span::new(source.offset_of(e.line, e.column), 1)
            } else {
                e.span
            };
            // At the very end of the file the parser points one past it; the label must stay inside the text.
            let offset = span.offset.min(source.text.len());
            let span = Span::new(offset, span.len.min(source.text.len() - offset));
            // A tab where the parser stopped (or at the start of its line) is the usual cause.
            let line_start = source.text[..offset].rfind('\n').map_or(0, |i| i + 1);
            let tab = source.text[line_start..]
                .chars()
                .take_while(|c| c.is_whitespace() && *c != '\n')
                .any(|c| c == '\t')
                || source.text[offset..].starts_with('\t');
            let help = if tab {
                "YAML does not allow tabs for indentation; replace them with spaces"
            } else {
                "check the indentation, quotes and brackets around this point"
            };
            diagnostics.push(
                Diagnostic::new(Code::Syntax, span, e.message)
                    .label("the YAML does not parse here")
                    .help(help),
            );
            return Validated {
                diagnostics,
                plan: None,
            };
        }
    };
    let document = decode(&root, source, &mut diagnostics);
    let plan = document.as_ref().and_then(|doc| {
        let mut rules = Rules::new(doc, now, &mut diagnostics);
        rules.check_all();
        rules.check_env(&source.path);
        if purpose == Purpose::Check {
            // The rules' own tables go unfreed too (see `check`).
            std::mem::forget(rules);
            return None;
        }
        let plan = rules.build_plan(&source.path);
        let has_error = diagnostics.iter().any(|d| d.severity() == Severity::Error);
        if has_error {
            None
        } else {
            plan
        }
    });
    if purpose == Purpose::Check {
        std::mem::forget(document);
        std::mem::forget(root);
    }
    // A parser error at the very end of the file may point one past it; labels must stay inside the text.
    for d in &mut diagnostics {
        d.span.offset = d.span.offset.min(source.text.len());
        d.span.len = d.span.len.min(source.text.len() - d.span.offset);
    }
    // One problem in `defaults` is seen by every job; report it once.
    diagnostics.sort_by_key(|d| (d.span.offset, d.span.len, d.code.as_str()));
    diagnostics.dedup_by(|a, b| a.code == b.code && a.span == b.span);
    Validated { diagnostics, plan }
}

/// A job's options with `defaults` filled in.
struct Resolved<'d> {
    job: &'d JobSpec,
    name: &'d Sp<String>,
    /// The job's options with the defaults filled in; borrowed when the file has no `defaults` (10,000 copies
    /// of the options cost a tenth of a large file's validation).
    o: std::borrow::Cow<'d, JobOptions>,
}

struct Rules<'d, 'o> {
    doc: &'d Document,
    now: DateTime<Utc>,
    out: &'o mut Vec<Diagnostic>,
    jobs: Vec<Resolved<'d>>,
    channel_names: Vec<&'d str>,
    job_ids: HashMap<&'d str, usize>,
    /// Channel name -> its uses, gathered once so the rules stay linear in the size of the file.
    uses_by_channel: HashMap<String, Vec<(usize, Span, Use)>>,
    /// Channels an `undeclared-channel` error suggested (a typo of their name): their usage problems follow from
    /// that error and are not reported again.
    explained: std::collections::HashSet<&'d str>,
}

/// One use of a channel by a job.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Use {
    Stdin,
    Stdout,
    Each,
    DeadLetter,
}

impl Use {
    fn writes(self) -> bool {
        matches!(self, Use::Stdout | Use::DeadLetter)
    }
}

impl<'d, 'o> Rules<'d, 'o> {
    fn new(doc: &'d Document, now: DateTime<Utc>, out: &'o mut Vec<Diagnostic>) -> Self {
        let defaults = doc.defaults.as_ref();
        let jobs = doc
            .jobs
            .0
            .iter()
            .map(|(name, job)| Resolved {
                job,
                name,
                o: match defaults {
                    Some(d) => std::borrow::Cow::Owned(merge_options(&job.options, d)),
                    None => std::borrow::Cow::Borrowed(&job.options),
                },
            })
            .collect::<Vec<_>>();
        let channel_names = doc
            .channels
            .as_ref()
            .map(|c| c.names().collect())
            .unwrap_or_default();
        let job_ids = doc
            .jobs
            .0
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.value.as_str(), i))
            .collect();
        let mut uses_by_channel: HashMap<String, Vec<(usize, Span, Use)>> = HashMap::new();
        for (j, r) in jobs.iter().enumerate() {
            for (c, u) in Self::uses(r) {
                uses_by_channel
                    .entry(c.value)
                    .or_default()
                    .push((j, c.span, u));
            }
        }
        Rules {
            doc,
            now,
            out,
            jobs,
            channel_names,
            job_ids,
            uses_by_channel,
            explained: Default::default(),
        }
    }

    fn channels(&self) -> &'d [(Sp<String>, ChannelSpec)] {
        self.doc
            .channels
            .as_ref()
            .map(|c| c.0.as_slice())
            .unwrap_or(&[])
    }

    fn channel(&self, name: &str) -> Option<&'d ChannelSpec> {
        self.doc.channels.as_ref().and_then(|c| c.get(name))
    }

    fn triggers(job: &'d JobSpec) -> impl Iterator<Item = &'d Sp<TriggerSpec>> {
        job.trigger.iter().flat_map(|t| t.value.0.iter())
    }

    /// Every channel reference of a job, with how it is used.
    fn uses(r: &Resolved<'d>) -> Vec<(Sp<String>, Use)> {
        let mut uses = Vec::new();
        if let Some(c) = &r.job.stdin {
            uses.push((c.clone(), Use::Stdin));
        }
        if let Some(c) = &r.job.stdout {
            uses.push((c.clone(), Use::Stdout));
        }
        for t in Self::triggers(r.job) {
            if let TriggerSpec::Each(e) = &t.value {
                uses.push((e.each.clone(), Use::Each));
            }
        }
        if let Some(c) = &r.o.dead_letter {
            uses.push((c.clone(), Use::DeadLetter));
        }
        uses
    }

    fn check_all(&mut self) {
        self.check_channel_refs();
        self.check_executor_refs();
        self.check_after();
        self.check_on_failure();
        self.check_failure_joins();
        self.check_probes();
        self.check_probe_variables();
        self.check_channel_usage();
        self.check_conflicts();
        self.check_starved();
        self.check_times();
    }

    fn check_channel_refs(&mut self) {
        let mut found = Vec::new();
        // Every use was gathered once in `uses_by_channel`; a name not under `channels` is undeclared.
        for (name, uses) in &self.uses_by_channel {
            if self.channel(name).is_some() {
                continue;
            }
            let help =
                match crate::diagnostics::did_you_mean(name, self.channel_names.iter().copied()) {
                    Some(best) => {
                        self.explained.insert(best);
                        format!("did you mean `{best}`?")
                    }
                    None => format!("declare it: `channels: {{ {name}: {{ kind: queue }} }}`"),
                };
            for &(j, span, _) in uses {
                found.push(
                    Diagnostic::new(
                        Code::UndeclaredChannel,
                        span,
                        format!(
                            "job `{}` uses channel `{name}`, which is not declared",
                            self.jobs[j].name.value
                        ),
                    )
                    .label("not declared under `channels`")
                    .help(help.clone()),
                );
            }
        }
        self.out.extend(found);
    }

    fn check_executor_refs(&mut self) {
        let declared: Vec<&str> = self
            .doc
            .executors
            .as_ref()
            .map(|e| e.names().collect())
            .unwrap_or_default();
        let mut all = declared.clone();
        if !all.contains(&"default") {
            all.push("default");
        }
        let mut found = Vec::new();
        for r in &self.jobs {
            if let Some(e) = &r.o.executor {
                if !all.contains(&e.value.as_str()) {
                    found.push(
                        Diagnostic::new(
                            Code::UndeclaredExecutor,
                            e.span,
                            format!(
                                "job `{}` names executor `{}`, which is not declared",
                                r.name.value, e.value
                            ),
                        )
                        .label("not declared under `executors`")
                        .help(suggestion_help(&e.value, &all, "executor")),
                    );
                }
            }
        }
        self.out.extend(found);
    }

    fn job_index(&self, name: &str) -> Option<usize> {
        self.job_ids.get(name).copied()
    }

    /// Every use of the channel `name`: (job, span of the reference, how).
    fn uses_of(&self, name: &str) -> &[(usize, Span, Use)] {
        self.uses_by_channel.get(name).map_or(&[], Vec::as_slice)
    }

    /// `on_failure` names a job (once per place it is written: `defaults` is shared by every job).
    fn check_on_failure(&mut self) {
        let names: Vec<&str> = self.jobs.iter().map(|r| r.name.value.as_str()).collect();
        let mut found: Vec<Diagnostic> = Vec::new();
        for r in &self.jobs {
            let Some(h) = &r.o.on_failure else { continue };
            if self.job_index(&h.value).is_some() || found.iter().any(|d| d.span == h.span) {
                continue;
            }
            found.push(
                Diagnostic::new(
                    Code::UnknownJob,
                    h.span,
                    format!("`on_failure` names `{}`, which is not a job", h.value),
                )
                .label("not a job")
                .help(suggestion_help(&h.value, &names, "job")),
            );
        }
        self.out.extend(found);
    }

    fn check_after(&mut self) {
        let names: Vec<&str> = self.jobs.iter().map(|r| r.name.value.as_str()).collect();
        let mut found = Vec::new();
        // edges[j] = (upstream job, the span of its name in j's `after`)
        let mut edges: Vec<Vec<(usize, Span)>> = vec![Vec::new(); self.jobs.len()];
        for (j, r) in self.jobs.iter().enumerate() {
            for t in Self::triggers(r.job) {
                if let TriggerSpec::After(a) = &t.value {
                    for up in &a.after.value.names.0 {
                        match self.job_index(&up.value) {
                            Some(u) => edges[j].push((u, up.span)),
                            None => found.push(
                                Diagnostic::new(
                                    Code::UnknownJob,
                                    up.span,
                                    format!(
                                        "job `{}` runs after `{}`, which is not a job",
                                        r.name.value, up.value
                                    ),
                                )
                                .label("no job has this name")
                                .help(suggestion_help(&up.value, &names, "job")),
                            ),
                        }
                    }
                }
            }
        }
        for cycle in find_cycles(&edges) {
            // Report at the `after` entry of the first job of the cycle that names the next one.
            let first = cycle[0];
            let next = cycle[1 % cycle.len()];
            let span = edges[first]
                .iter()
                .find(|(u, _)| *u == next)
                .map(|(_, s)| *s)
                .unwrap_or(self.jobs[first].name.span);
            let mut path: Vec<&str> = cycle.iter().map(|&j| names[j]).collect();
            path.push(path[0]);
            let path = path.join(" -> ");
            found.push(
                Diagnostic::new(
                    Code::DependencyCycle,
                    span,
                    format!("`after` triggers form a cycle: {path} (each waits for the next)"),
                )
                .label("this link closes the cycle")
                .help("no job of a cycle could ever run first; remove one of these `after` links"),
            );
        }
        self.out.extend(found);
    }

    /// `after: { status: ready }` names jobs with a `ready` probe (else they could never be ready). A probe given
    /// but invalid is in the document too (see `Decoder::ready`): it is reported as invalid, not as missing.
    /// What would keep every run from starting: an environment string Linux refuses (over 128 KiB), an
    /// `env_file` that is not a regular file (a FIFO or a device would hold or flood the run's start). A missing
    /// file is no error here: it may be made before the run (the run fails if it is not).
    fn check_env(&mut self, path: &Path) {
        let folder = plan_folder(path);
        let max = crate::limits::MAX_ARG_STRLEN;
        let mut found = Vec::new();
        for r in &self.jobs {
            for (key, value) in r.o.env.iter().flat_map(|e| e.0.iter()) {
                let len = key.value.len() + 1 + value.value.0.len() + 1;
                if len > max {
                    found.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            value.span,
                            format!(
                                "`{}` is {} KiB: Linux starts no program with an environment variable over 128 KiB",
                                key.value,
                                len.div_ceil(1024)
                            ),
                        )
                        .label("too large for the environment")
                        .help("put the data in a file and pass its path, or send it through `stdin`"),
                    );
                }
            }
            for file in r.o.env_file.iter().flat_map(|f| f.value.0.iter()) {
                let full = folder.join(&file.value);
                let Ok(meta) = std::fs::metadata(&full) else {
                    continue;
                };
                if !meta.is_file() {
                    found.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            file.span,
                            format!("env_file {} is not a regular file", full.display()),
                        )
                        .label("not a regular file")
                        .help("name a dotenv file (`KEY=VALUE` lines); a pipe or a device is never read"),
                    );
                } else if meta.len() > crate::limits::ENV_FILE_MAX {
                    found.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            file.span,
                            format!(
                                "env_file {} is {} KiB: at most {} KiB is read",
                                full.display(),
                                meta.len().div_ceil(1024),
                                crate::limits::ENV_FILE_MAX / 1024
                            ),
                        )
                        .label("too large")
                        .help("an env file holds variables; put data in a file the job reads"),
                    );
                }
            }
        }
        self.out.extend(found);
    }

    /// `after: [a, b], status: failure` fires only when all of them failed since its last firing: an alert that
    /// looks like "any of them failed" and never fires when one does. Said, with the two ways to mean "any".
    fn check_failure_joins(&mut self) {
        let mut found = Vec::new();
        for r in &self.jobs {
            for t in Self::triggers(r.job) {
                let TriggerSpec::After(a) = &t.value else {
                    continue;
                };
                let failure = a
                    .status
                    .as_ref()
                    .is_some_and(|s| s.value == Status::Failure);
                if !failure || a.after.value.any || a.after.value.names.0.len() < 2 {
                    continue;
                }
                let names: Vec<&str> = a
                    .after
                    .value
                    .names
                    .0
                    .iter()
                    .map(|n| n.value.as_str())
                    .collect();
                found.push(
                    Diagnostic::new(
                        Code::AllMustFail,
                        a.after.span,
                        format!(
                            "job `{}` fires only when all of {} failed since it last ran, not when one of them fails",
                            r.name.value,
                            names.join(", ")
                        ),
                    )
                    .label("all of these must fail")
                    .help(format!(
                        "to fire when any of them fails, write `after: {{ any: [{}], status: failure }}`, or give them `on_failure: {}`",
                        names.join(", "),
                        r.name.value
                    )),
                );
            }
        }
        self.out.extend(found);
    }

    fn check_probes(&mut self) {
        let mut found = Vec::new();
        for r in &self.jobs {
            for t in Self::triggers(r.job) {
                let TriggerSpec::After(a) = &t.value else {
                    continue;
                };
                if a.status.as_ref().is_none_or(|s| s.value != Status::Ready) {
                    continue;
                }
                for up in &a.after.value.names.0 {
                    let Some(u) = self.job_index(&up.value) else {
                        continue;
                    };
                    if self.jobs[u].o.ready.is_none() {
                        found.push(
                            Diagnostic::new(
                                Code::NoProbe,
                                up.span,
                                format!(
                                    "job `{}` waits for `{}` to be ready, but `{}` has no `ready` probe",
                                    r.name.value, up.value, up.value
                                ),
                            )
                            .label("never ready: no probe")
                            .help(format!(
                                "give `{}` a probe, e.g. `ready: {{ tcp: 127.0.0.1:8080 }}`, or wait for its end with `status: success`",
                                up.value
                            )),
                        );
                    }
                }
            }
        }
        self.out.extend(found);
    }

    /// The `$NAME`s of each job's probe address: a name the job's `env` does not set is an error, unless the job
    /// has an `env_file` (validation does not read it: a hint then). When `env` sets them all, the address they
    /// make is checked as one written out would be. (`ready` in `defaults` is checked with each job's `env`.)
    fn check_probe_variables(&mut self) {
        let mut found = Vec::new();
        for r in &self.jobs {
            let Some(ready) = &r.o.ready else { continue };
            let ready = &ready.value;
            if ready.vars.is_empty() {
                continue;
            }
            let value_of = |name: &str| {
                r.o.env
                    .as_ref()
                    .and_then(|e| e.get(name))
                    .map(|v| v.value.0.as_str())
            };
            let mut all_set = true;
            for var in &ready.vars {
                if value_of(&var.value).is_some() {
                    continue;
                }
                all_set = false;
                found.push(unset_variable(r, var));
            }
            if !all_set {
                continue;
            }
            let (text, checked) = match (&ready.http, &ready.tcp) {
                (Some(url), _) => (&url.value.0, url.span),
                (None, Some(address)) => (&address.value, address.span),
                (None, None) => continue,
            };
            let address = crate::address::expand(text, value_of).unwrap_or_default();
            let problem = match ready.http.is_some() {
                true => crate::address::http_url(&address).err(),
                false => crate::address::tcp_address(&address).err(),
            };
            if let Some(problem) = problem {
                found.push(
                    Diagnostic::new(
                        Code::InvalidProbe,
                        checked,
                        format!("with the `env` of job `{}`, {problem}", r.name.value),
                    )
                    .label("this probe cannot work")
                    .help("give the variables values that make an address, e.g. `env: { PORT: 8080 }`"),
                );
            }
        }
        self.out.extend(found);
    }

    fn check_channel_usage(&mut self) {
        let mut found = Vec::new();
        for (name, spec) in self.channels() {
            if self.explained.contains(name.value.as_str()) {
                continue;
            }
            let kind = spec.kind.as_ref().map_or(ChannelKind::Queue, |k| k.value);
            if let (Some(durable), false) = (&spec.durable, kind == ChannelKind::Queue) {
                if durable.value {
                    found.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            durable.span,
                            format!("channel `{}` cannot be durable: it is not a queue", name.value),
                        )
                        .label("only a queue keeps its messages")
                        .help("a pipe holds nothing and a broadcast copies to live readers; make it `kind: queue`, or remove `durable`"),
                    );
                }
            }
            let uses = self.uses_of(&name.value);
            let writers: Vec<(usize, Span, Use)> =
                uses.iter().copied().filter(|u| u.2.writes()).collect();
            let readers: Vec<(usize, Span, Use)> =
                uses.iter().copied().filter(|u| !u.2.writes()).collect();
            let writer_jobs = distinct(&writers);
            let reader_jobs = distinct(&readers);
            if writers.is_empty() && readers.is_empty() {
                found.push(
                    Diagnostic::new(
                        Code::UnusedChannel,
                        name.span,
                        format!("channel `{}` is declared but no job uses it", name.value),
                    )
                    .label("unused")
                    .help("remove it, or connect a job with `stdout:`, `stdin:` or `each:`"),
                );
                continue;
            }
            if kind == ChannelKind::Pipe {
                found.extend(self.pipe_problems(name, uses, (&writer_jobs, &reader_jobs)));
            }
            if !writers.is_empty() && readers.is_empty() {
                found.push(
                    Diagnostic::new(Code::NoReader, name.span, format!("channel `{}` is written but no job reads it", name.value))
                        .label("no reader")
                        .help("its writers would block for ever once it is full; add a job with `stdin:` or `each:`"),
                );
            }
            if writers.is_empty() && !readers.is_empty() {
                found.push(
                    Diagnostic::new(
                        Code::NoWriter,
                        name.span,
                        format!("channel `{}` is read but no job writes it", name.value),
                    )
                    .label("no writer")
                    .help("its readers wait until a reload gives it a writer (a durable queue's get what it kept, then end-of-file); add a job with `stdout:` to it"),
                );
            }
        }
        self.out.extend(found);
    }

    /// What is wrong with a pipe's endpoints: a use that is not a standard stream, more or fewer than one writer
    /// and one reader job, an endpoint that allows several runs at once.
    fn pipe_problems(
        &self,
        name: &Sp<String>,
        uses: &[(usize, Span, Use)],
        (writer_jobs, reader_jobs): (&[usize], &[usize]),
    ) -> Vec<Diagnostic> {
        let mut found = Vec::new();
        for (j, span, u) in uses.iter() {
            let bad = match u {
                Use::Each => Some("a pipe is read on standard input (`stdin:`), not by `each`"),
                Use::DeadLetter => {
                    Some("dead letters are messages; send them to a queue, not a pipe")
                }
                _ => None,
            };
            if let Some(why) = bad {
                found.push(
                    Diagnostic::new(
                        Code::PipeEndpoints,
                        *span,
                        format!(
                            "job `{}` cannot use pipe `{}` this way",
                            self.jobs[*j].name.value, name.value
                        ),
                    )
                    .label("not a pipe endpoint")
                    .help(format!("{why}; or make `{}` a queue", name.value)),
                );
            }
        }
        if writer_jobs.len() != 1 || reader_jobs.len() != 1 {
            found.push(
                Diagnostic::new(
                    Code::PipeEndpoints,
                    name.span,
                    format!(
                        "pipe `{}` has {} writer job(s) and {} reader job(s); a pipe joins exactly one of each",
                        name.value,
                        writer_jobs.len(),
                        reader_jobs.len()
                    ),
                )
                .label("pipe declared here")
                .help("use `kind: queue` for several writers or readers"),
            );
        }
        for &j in writer_jobs.iter().chain(reader_jobs.iter()) {
            let r = &self.jobs[j];
            if let Some(mi) = r.o.max_instances.as_ref().filter(|m| m.value > 1) {
                found.push(
                    Diagnostic::new(
                        Code::PipeEndpoints,
                        mi.span,
                        format!("job `{}` uses pipe `{}` but allows {} runs at once", r.name.value, name.value, mi.value),
                    )
                    .label("must be 1 for a pipe endpoint")
                    .help("one OS pipe cannot be shared by concurrent runs; use a queue or `max_instances: 1`"),
                );
            }
        }
        found
    }

    fn check_conflicts(&mut self) {
        let mut found = Vec::new();
        for r in &self.jobs {
            let each: Vec<&EachTrigger> = Self::triggers(r.job)
                .filter_map(|t| match &t.value {
                    TriggerSpec::Each(e) => Some(e),
                    _ => None,
                })
                .collect();
            found.extend(stream_conflicts(r, &each));
            found.extend(each_conflicts(r, &each));
            found.extend(interval_conflicts(r));
        }
        self.out.extend(found);
    }

    fn executor_workers(&self, name: Option<&str>) -> usize {
        let name = name.unwrap_or("default");
        let declared = self.doc.executors.as_ref().and_then(|e| e.get(name));
        match declared {
            Some(e) => e
                .max_workers
                .as_ref()
                .map_or(plan::DEFAULT_WORKERS, |w| w.value as usize),
            None => plan::DEFAULT_WORKERS,
        }
    }

    fn check_starved(&mut self) {
        let mut found = Vec::new();
        for (name, _) in self.channels() {
            let uses = self.uses_of(&name.value);
            let writers: Vec<usize> = uses.iter().filter(|u| u.2.writes()).map(|u| u.0).collect();
            let readers: Vec<(usize, Span)> = uses
                .iter()
                .filter(|u| !u.2.writes())
                .map(|u| (u.0, u.1))
                .collect();
            for &(rj, span) in &readers {
                for &wj in &writers {
                    if wj == rj {
                        continue;
                    }
                    let (re, we) = (&self.jobs[rj].o.executor, &self.jobs[wj].o.executor);
                    let re_name = re.as_ref().map(|e| e.value.as_str());
                    let we_name = we.as_ref().map(|e| e.value.as_str());
                    if re_name.unwrap_or("default") == we_name.unwrap_or("default")
                        && self.executor_workers(re_name) == 1
                    {
                        found.push(
                            Diagnostic::new(
                                Code::StarvedExecutor,
                                span,
                                format!(
                                    "jobs `{}` and `{}` share channel `{}` but can only run on executor `{}` with max_workers: 1",
                                    self.jobs[wj].name.value,
                                    self.jobs[rj].name.value,
                                    name.value,
                                    re_name.unwrap_or("default")
                                ),
                            )
                            .label("this reader waits for the writer's worker")
                            .help("the writer blocks when the channel is full while the reader waits for the only worker; give one of them another executor or raise max_workers"),
                        );
                    }
                }
            }
        }
        self.out.extend(found);
    }

    fn check_times(&mut self) {
        let mut found = Vec::new();
        for r in &self.jobs {
            for t in Self::triggers(r.job) {
                let (dt, zone, help) = match &t.value {
                    TriggerSpec::At(a) => (
                        &a.at,
                        &a.timezone,
                        "it fires, late, only if a runner starts within the job's `misfire_grace` (1s unless set) \
                         of it; after that it is missed",
                    ),
                    TriggerSpec::Interval(i) => match &i.end {
                        Some(end) => (end, &i.timezone, "this interval has ended: it will not fire"),
                        None => continue,
                    },
                    _ => continue,
                };
                let zone = zone.as_ref().map_or_else(system_zone, |z| z.value.0);
                let instant = dt.value.0.resolve(zone);
                if instant < self.now {
                    found.push(
                        Diagnostic::new(
                            Code::PastTime,
                            dt.span,
                            format!("{} is already past", instant.to_rfc3339()),
                        )
                        .label("in the past")
                        .help(help),
                    );
                }
            }
        }
        self.out.extend(found);
    }
}

/// A `conflicting-keys` diagnostic.
fn conflict(span: Span, message: String, help: &str) -> Diagnostic {
    Diagnostic::new(Code::ConflictingKeys, span, message)
        .label("conflicts")
        .help(help.to_string())
}

/// A job's standard streams against each other and its `each` triggers: `stdin` and `each` on one channel,
/// `stdout` into the channel it reads, two `each` triggers.
fn stream_conflicts(r: &Resolved<'_>, each: &[&EachTrigger]) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    if let Some(stdin) = &r.job.stdin {
        for e in each {
            if e.each.value == stdin.value {
                found.push(conflict(
                    e.each.span,
                    format!(
                        "job `{}` reads channel `{}` both by `stdin` and by `each`",
                        r.name.value, stdin.value
                    ),
                    "`each` already puts the messages on the run's standard input; remove `stdin`",
                ));
            }
        }
        if let Some(stdout) = r.job.stdout.as_ref().filter(|o| o.value == stdin.value) {
            found.push(conflict(
                stdout.span,
                format!(
                    "job `{}` writes the channel `{}` that it reads",
                    r.name.value, stdin.value
                ),
                "a job cannot feed itself; use a second channel",
            ));
        }
    }
    if each.len() > 1 {
        found.push(conflict(
            each[1].each.span,
            format!("job `{}` has more than one `each` trigger", r.name.value),
            "a run's standard input holds the messages of one channel; split the job in two",
        ));
    }
    found
}

/// What an `each` job may not have (`stdin` from another channel, `restart`, dead letters into its own channel),
/// and a `dead_letter` without `each`.
fn each_conflicts(r: &Resolved<'_>, each: &[&EachTrigger]) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    if let Some(e) = each.first() {
        if let Some(stdin) = r.job.stdin.as_ref().filter(|s| s.value != e.each.value) {
            found.push(conflict(
                stdin.span,
                format!(
                    "job `{}` has an `each` trigger and reads `stdin` from another channel",
                    r.name.value
                ),
                "an `each` run's standard input holds its messages; remove `stdin`",
            ));
        }
        if let Some(restart) =
            r.o.restart
                .as_ref()
                .filter(|x| x.value.policy() != Restart::Never)
        {
            found.push(conflict(
                restart.span,
                format!(
                    "job `{}` has both `restart` and an `each` trigger",
                    r.name.value
                ),
                "an `each` job runs once per message; use `retry` to try a message again",
            ));
        }
        if let Some(dl) = r.o.dead_letter.as_ref().filter(|d| d.value == e.each.value) {
            found.push(conflict(
                dl.span,
                format!(
                    "job `{}` sends dead letters back to the channel it reads",
                    r.name.value
                ),
                "failed messages would loop for ever; use a separate channel",
            ));
        }
    } else if let Some(dl) = &r.o.dead_letter {
        // `defaults` may set dead_letter for all jobs; only a job's own key is a conflict.
        if r.job.options.dead_letter.is_some() {
            found.push(conflict(
                dl.span,
                format!("job `{}` has `dead_letter` but no `each` trigger", r.name.value),
                "dead letters are the messages of failed `each` runs; add `trigger: { each: CHANNEL }`",
            ));
        }
    }
    found
}

/// An interval's `jitter` not shorter than its period, its `end` before its `start`.
fn interval_conflicts(r: &Resolved<'_>) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for t in Rules::triggers(r.job) {
        if let TriggerSpec::Interval(i) = &t.value {
            if let Some(j) = i
                .jitter
                .as_ref()
                .filter(|j| j.value.0 >= i.interval.value.0)
            {
                found.push(conflict(
                    j.span,
                    "`jitter` must be shorter than `interval`".to_string(),
                    "a jitter as long as the interval would let firings overtake each other",
                ));
            }
            if let (Some(s), Some(e)) = (&i.start, &i.end) {
                let zone = i.timezone.as_ref().map_or_else(system_zone, |z| z.value.0);
                if e.value.0.resolve(zone) < s.value.0.resolve(zone) {
                    found.push(conflict(
                        e.span,
                        "`end` is before `start`".to_string(),
                        "the interval would never fire",
                    ));
                }
            }
        }
    }
    found
}

fn distinct(uses: &[(usize, Span, Use)]) -> Vec<usize> {
    let mut jobs: Vec<usize> = uses.iter().map(|(j, _, _)| *j).collect();
    jobs.sort_unstable();
    jobs.dedup();
    jobs
}

fn merge_options(job: &JobOptions, defaults: &JobOptions) -> JobOptions {
    fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
        a.clone().or_else(|| b.clone())
    }
    let env = match (&job.env, &defaults.env) {
        (Some(j), Some(d)) => {
            // Job variables override default variables of the same name.
            let mut merged = d.clone();
            merged.0.retain(|(k, _)| j.get(&k.value).is_none());
            merged.0.extend(j.0.iter().cloned());
            Some(merged)
        }
        (j, d) => pick(j, d),
    };
    JobOptions {
        cwd: pick(&job.cwd, &defaults.cwd),
        env,
        env_file: pick(&job.env_file, &defaults.env_file),
        executor: pick(&job.executor, &defaults.executor),
        max_instances: pick(&job.max_instances, &defaults.max_instances),
        coalesce: pick(&job.coalesce, &defaults.coalesce),
        misfire_grace: pick(&job.misfire_grace, &defaults.misfire_grace),
        timeout: pick(&job.timeout, &defaults.timeout),
        retry: pick(&job.retry, &defaults.retry),
        restart: pick(&job.restart, &defaults.restart),
        stop_grace: pick(&job.stop_grace, &defaults.stop_grace),
        dead_letter: pick(&job.dead_letter, &defaults.dead_letter),
        ready: pick(&job.ready, &defaults.ready),
        alive: pick(&job.alive, &defaults.alive),
        limits: pick(&job.limits, &defaults.limits),
        user: pick(&job.user, &defaults.user),
        on_failure: pick(&job.on_failure, &defaults.on_failure),
    }
}

/// Elementary cycles of the `after` graph, one per strongly connected component (each reported once).
fn find_cycles(edges: &[Vec<(usize, Span)>]) -> Vec<Vec<usize>> {
    // Iterative DFS with colours; a back edge closes a cycle, which is the stack from its target up.
    let n = edges.len();
    let mut colour = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut cycles = Vec::new();
    let mut in_cycle = vec![false; n];
    for root in 0..n {
        if colour[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < edges[node].len() {
                let (up, _) = edges[node][*next];
                *next += 1;
                match colour[up] {
                    0 => {
                        colour[up] = 1;
                        stack.push((up, 0));
                    }
                    1 if !in_cycle[up] => {
                        let start = stack.iter().position(|(s, _)| *s == up).unwrap_or(0);
                        let cycle: Vec<usize> = stack[start..].iter().map(|(s, _)| *s).collect();
                        for &c in &cycle {
                            in_cycle[c] = true;
                        }
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    cycles
}

/// The diagnostic of a probe's `$NAME` that the job's `env` does not set: a hint when an `env_file` may set it.
fn unset_variable(r: &Resolved<'_>, var: &Sp<String>) -> Diagnostic {
    let job = &r.name.value;
    let name = &var.value;
    match &r.o.env_file {
                    Some(_) => Diagnostic::new(
                        Code::EnvFileVariable,
                        var.span,
                        format!(
                            "`${name}` in the probe of job `{job}` is not in its `env`: its env_file must set it (read at each run's start, not here)"
                        ),
                    )
                    .label("from the env_file")
                    .help(format!(
                        "if the env_file does not set `{name}`, the run is never ready; set it in `env` to have it checked here"
                    )),
                    None => {
                        let names: Vec<&str> = r
                            .o
                            .env
                            .iter()
                            .flat_map(|e| e.0.iter().map(|(k, _)| k.value.as_str()))
                            .collect();
                        let help = match crate::diagnostics::did_you_mean(name, names.iter().copied()) {
                            Some(best) => format!("did you mean `${best}`?"),
                            None => format!(
                                "set it in the job's `env` (`env: {{ {name}: ... }}`) or an `env_file`; a probe takes the job's variables, not the runner's environment (write `$$` for a `$`)"
                            ),
                        };
                        Diagnostic::new(
                            Code::InvalidProbe,
                            var.span,
                            format!(
                                "`${name}` in the probe of job `{job}` is not set: the job's `env` has no `{name}`"
                            ),
                        )
                        .label("not in the job's `env`")
                        .help(help)
                    }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// (code, the text the diagnostic points at) for every problem of a document.
    fn found(text: &str) -> Vec<(&'static str, String)> {
        let source = Source::new("t.yaml", text.to_string());
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        validate(&source, now)
            .diagnostics
            .into_iter()
            .map(|d| (d.code.as_str(), source.slice(d.span).to_string()))
            .collect()
    }

    fn one(text: &str) -> (&'static str, String) {
        let all = found(text);
        assert_eq!(all.len(), 1, "{all:?}");
        all.into_iter().next().unwrap()
    }

    const PAIR: &str =
        "channels: { c: {} }\njobs:\n  w: { run: x, stdout: c }\n  r: { run: y, stdin: c }\n";

    #[test]
    fn a_wired_pair_is_clean() {
        assert_eq!(found(PAIR), []);
    }

    #[test]
    fn undeclared_channel_for_every_kind_of_use() {
        for key in ["stdin: nope", "stdout: nope", "trigger: { each: nope }"] {
            let text = format!("jobs:\n  a: {{ run: x, {key} }}\n");
            assert_eq!(one(&text), ("undeclared-channel", "nope".into()), "{key}");
        }
        let text = "channels: { c: {} }\njobs:\n  w: { run: x, stdout: c }\n  r: { run: y, trigger: { each: c }, dead_letter: nope }\n";
        assert_eq!(one(text), ("undeclared-channel", "nope".into()));
    }

    #[test]
    fn undeclared_executor_but_default_always_exists() {
        assert_eq!(found("jobs:\n  a: { run: x, executor: default }\n"), []);
        assert_eq!(
            one("jobs:\n  a: { run: x, executor: gpu }\n"),
            ("undeclared-executor", "gpu".into())
        );
    }

    #[test]
    fn unknown_job_and_cycles() {
        assert_eq!(
            one("jobs:\n  a: { run: x, trigger: { after: b } }\n"),
            ("unknown-job", "b".into())
        );
        assert_eq!(
            one("jobs:\n  a: { run: x, trigger: { after: a } }\n"),
            ("dependency-cycle", "a".into())
        );
        let two = found("jobs:\n  a: { run: x, trigger: { after: b } }\n  b: { run: x, trigger: { after: a } }\n");
        assert_eq!(two.len(), 1, "one cycle is reported once: {two:?}");
        assert_eq!(two[0].0, "dependency-cycle");
    }

    #[test]
    fn pipe_endpoints() {
        let ok = PAIR.replace("c: {}", "c: { kind: pipe }");
        assert_eq!(found(&ok), []);
        let each = "channels: { c: { kind: pipe } }\njobs:\n  w: { run: x, stdout: c }\n  r: { run: y, trigger: { each: c } }\n";
        assert_eq!(one(each), ("pipe-endpoints", "c".into()));
        let many = ok.replace("max_instances: 1", "") + "defaults: { max_instances: 2 }\n";
        assert!(
            found(&many)
                .iter()
                .all(|(c, t)| *c == "pipe-endpoints" && t == "2"),
            "{:?}",
            found(&many)
        );
        let two_readers = ok.clone() + "  r2: { run: z, stdin: c }\n";
        assert_eq!(one(&two_readers), ("pipe-endpoints", "c".into()));
    }

    #[test]
    fn readers_and_writers() {
        assert_eq!(
            one("channels: { c: {} }\njobs:\n  w: { run: x, stdout: c }\n"),
            ("no-reader", "c".into())
        );
        assert_eq!(
            one("channels: { c: {} }\njobs:\n  r: { run: x, stdin: c }\n"),
            ("no-writer", "c".into())
        );
        assert_eq!(
            one("channels: { c: {} }\njobs:\n  a: { run: x }\n"),
            ("unused-channel", "c".into())
        );
        // A dead letter is a write: the channel has a writer.
        let dl = "channels: { c: {}, d: {} }\njobs:\n  w: { run: x, stdout: c }\n  r: { run: y, trigger: { each: c }, dead_letter: d }\n  z: { run: z, stdin: d }\n";
        assert_eq!(found(dl), []);
    }

    #[test]
    fn conflicting_keys() {
        let base = "channels: { c: {}, d: {} }\njobs:\n  w: { run: x, stdout: c }\n";
        let cases = [
            ("  r: { run: y, stdin: c, trigger: { each: c } }\n", "c"),
            (
                "  r: { run: y, trigger: { each: c }, restart: always }\n",
                "always",
            ),
            ("  r: { run: y, stdin: c, stdout: c }\n", "c"),
            (
                "  r: { run: y, trigger: { each: c }, dead_letter: c }\n",
                "c",
            ),
        ];
        for (job, at) in cases {
            let text = format!("{base}{job}");
            assert!(
                found(&text).contains(&("conflicting-keys", at.to_string())),
                "{job}: {:?}",
                found(&text)
            );
        }
        let jitter = "jobs:\n  a: { run: x, trigger: { interval: 1s, jitter: 1s } }\n";
        assert_eq!(one(jitter), ("conflicting-keys", "1s".into()));
        let order = "jobs:\n  a: { run: x, trigger: { interval: 1m, start: \"2030-01-02 00:00\", end: \"2030-01-01 00:00\", timezone: UTC } }\n";
        assert_eq!(
            one(order),
            ("conflicting-keys", "\"2030-01-01 00:00\"".into())
        );
    }

    #[test]
    fn starved_executor() {
        let text = "executors: { solo: { max_workers: 1 } }\n".to_string()
            + &PAIR
                .replace("stdout: c }", "stdout: c, executor: solo }")
                .replace("stdin: c }", "stdin: c, executor: solo }");
        assert_eq!(one(&text), ("starved-executor", "c".into()));
        let two_workers = text.replace("max_workers: 1", "max_workers: 2");
        assert_eq!(found(&two_workers), []);
    }

    #[test]
    fn status_ready_needs_a_probe_upstream() {
        let text =
            "jobs:\n  web: { run: x }\n  c: { run: y, trigger: { after: web, status: ready } }\n";
        assert_eq!(one(text), ("no-probe", "web".into()));
        let probed = text.replace(
            "web: { run: x }",
            "web: { run: x, ready: { tcp: \"h:1\" } }",
        );
        assert_eq!(found(&probed), []);
        // An invalid probe is one problem, not two.
        let invalid = text.replace("web: { run: x }", "web: { run: x, ready: { tcp: h } }");
        assert_eq!(found(&invalid).len(), 1);
        assert_eq!(found(&invalid)[0].0, "invalid-probe");
        let not_a_mapping = text.replace("web: { run: x }", "web: { run: x, ready: up }");
        assert_eq!(one(&not_a_mapping).0, "invalid-value");
        // An invalid probe on one job hides nothing about another.
        let both = "jobs:\n  web: { run: x, ready: { tcp: h } }\n  db: { run: x }\n  c: { run: y, trigger: { after: [web, db], status: ready } }\n";
        let codes: Vec<_> = found(both).into_iter().map(|(c, _)| c).collect();
        assert_eq!(codes, ["invalid-probe", "no-probe"]);
    }

    #[test]
    fn past_time_is_a_warning_and_the_plan_is_still_built() {
        let text = "jobs:\n  a: { run: x, trigger: { at: \"2020-01-01T00:00:00Z\" } }\n";
        assert_eq!(one(text), ("past-time", "\"2020-01-01T00:00:00Z\"".into()));
        let source = Source::new("t.yaml", text.to_string());
        assert!(validate(&source, Utc::now()).plan.is_some());
    }

    #[test]
    fn defaults_apply_and_are_reported_once() {
        let text = "defaults: { executor: nope }\njobs:\n  a: { run: x }\n  b: { run: y }\n";
        assert_eq!(one(text), ("undeclared-executor", "nope".into()));
        let source = Source::new(
            "t.yaml",
            "defaults: { timeout: 5m }\njobs:\n  a: { run: x }\n  b: { run: y, timeout: 1s }\n"
                .into(),
        );
        let plan = validate(&source, Utc::now()).plan.unwrap();
        assert_eq!(
            plan.jobs[0].timeout,
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            plan.jobs[1].timeout,
            Some(std::time::Duration::from_secs(1))
        );
    }
}
