//! YAML tree -> [`Document`], collecting every shape problem (unknown, missing and duplicate keys, wrong types,
//! bad scalars) instead of stopping at the first, each pointing at the value at fault.

use std::collections::HashMap;

use crate::diagnostics::{suggestion_help, Code, Diagnostic};
use crate::document::*;
use crate::text::source::{Source, Span};
use crate::text::yaml::{Node, Value};
use crate::values::{name_problem, parse_datetime, parse_duration, parse_zone};

const DOCUMENT_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "executors",
    "channels",
    "defaults",
    "on_failure",
    "jobs",
];
const EXECUTOR_KEYS: &[&str] = &["type", "max_workers"];
const CHANNEL_KEYS: &[&str] = &["kind", "capacity", "max_message"];
const OPTION_KEYS: &[&str] = &[
    "cwd",
    "env",
    "env_file",
    "executor",
    "max_instances",
    "coalesce",
    "misfire_grace",
    "timeout",
    "retry",
    "restart",
    "stop_grace",
    "dead_letter",
    "ready",
    "alive",
    "limits",
    "user",
    "on_failure",
];
const JOB_ONLY_KEYS: &[&str] = &["run", "trigger", "stdin", "stdout", "enabled"];
const RETRY_KEYS: &[&str] = &["attempts", "backoff", "on"];
const RESTART_KEYS: &[&str] = &["policy", "max", "window"];
const PROBE_KINDS: &[&str] = &["log", "http", "tcp", "exec"];
const PROBE_TIMING_KEYS: &[&str] = &["interval", "timeout"];
const ALIVE_KINDS: &[&str] = &["http", "tcp", "exec", "log-silence"];
const ALIVE_KEYS: &[&str] = &["interval", "failures"];
const LIMIT_KEYS: &[&str] = &["memory", "cpu", "nofile", "nproc", "nice"];
const TRIGGER_WORDS: &[&str] = &["start", "cron", "interval", "at", "after", "each"];
const CRON_KEYS: &[&str] = &["cron", "timezone", "jitter"];
const INTERVAL_KEYS: &[&str] = &["interval", "jitter", "start", "end", "timezone"];
const AT_KEYS: &[&str] = &["at", "timezone"];
const AFTER_KEYS: &[&str] = &["after", "status"];
const EACH_KEYS: &[&str] = &["each", "batch"];

/// Read the tree into a document. Problems are pushed to `out`; the document holds what could be read.
pub fn decode(root: &Node, source: &Source, out: &mut Vec<Diagnostic>) -> Option<Document> {
    let mut d = Decoder {
        out,
        source,
        last_job: None,
        crons: HashMap::new(),
    };
    d.document(root)
}

struct Decoder<'a> {
    out: &'a mut Vec<Diagnostic>,
    source: &'a Source,
    /// The job decoded last (a key indented too little belongs to it).
    last_job: Option<String>,
    /// Parsed cron expressions by their text.
    crons:
        HashMap<String, Result<crate::schedule::cron::CronSet, crate::schedule::cron::CronProblem>>,
}

/// The keys of one mapping, checked: each known key once, with its key span kept for messages.
struct Fields<'n> {
    /// Key, key node, value node. A mapping has a handful of keys: a list beats a hash map (a file of 10,000 jobs
    /// has 30,000 of these).
    map: FieldList<'n>,
}

#[derive(Default)]
struct FieldList<'n>(Vec<(&'n str, (&'n Node, &'n Node))>);

impl<'n> FieldList<'n> {
    fn get(&self, key: &str) -> Option<&(&'n Node, &'n Node)> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
    fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    fn insert(&mut self, key: &'n str, value: (&'n Node, &'n Node)) {
        self.0.push((key, value));
    }
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.map.get(key).map(|(_, v)| *v)
    }
}

impl Decoder<'_> {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.out.push(diagnostic);
    }

    fn type_error(&mut self, node: &Node, expected: &str) {
        let found = node.value.type_name();
        self.push(
            Diagnostic::new(
                Code::InvalidValue,
                node.span,
                format!("expected {expected}, found {found}"),
            )
            .label(format!("this is {found}"))
            .help(format!("write {expected} here")),
        );
    }

    fn invalid(&mut self, span: Span, message: impl Into<String>, help: impl Into<String>) {
        let message = message.into();
        self.push(
            Diagnostic::new(Code::InvalidValue, span, message.clone())
                .label("invalid value")
                .help(help),
        );
    }

    /// Check a mapping's keys against `allowed` and `required`. `owner` is what a missing key is reported at.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        allowed: &[&[&str]],
        required: &[&str],
        owner: Span,
        what: &str,
    ) -> Option<Fields<'n>> {
        let Value::Map(pairs) = &node.value else {
            self.type_error(node, &format!("a mapping ({what})"));
            return None;
        };
        let mut map = FieldList::default();
        for (key, value) in pairs {
            let Some(name) = key.as_str() else {
                self.type_error(key, "a key that is a string");
                continue;
            };
            if !allowed.iter().any(|set| set.contains(&name)) {
                let candidates: Vec<&str> =
                    allowed.iter().flat_map(|s| s.iter().copied()).collect();
                self.push(
                    Diagnostic::new(
                        Code::UnknownKey,
                        key.span,
                        format!("unknown key `{name}` in {what}"),
                    )
                    .label("not a key of this mapping")
                    .help(key_help(name, &candidates)),
                );
                continue;
            }
            if let Some((first, _)) = map.get(name) {
                let at = self.source.line_col(first.span.offset);
                let line_hint = format!(
                    "`{name}` was first given on line {}, column {}",
                    at.line, at.column
                );
                self.push(
                    Diagnostic::new(
                        Code::DuplicateKey,
                        key.span,
                        format!("duplicate key `{name}` in {what}"),
                    )
                    .label("repeated here")
                    .help(format!("{line_hint}; keep one of them")),
                );
                continue;
            }
            map.insert(name, (key, value));
        }
        for key in required {
            if !map.contains_key(key) {
                self.push(
                    Diagnostic::new(Code::MissingKey, owner, format!("{what} has no `{key}`"))
                        .label(format!("`{key}` is required here"))
                        .help(missing_help(key)),
                );
            }
        }
        Some(Fields { map })
    }

    /// A mapping whose keys are user names (jobs, channels, executors, env variables).
    fn named<'n, T>(
        &mut self,
        node: &'n Node,
        what: &str,
        check_names: bool,
        mut item: impl FnMut(&mut Self, &'n Node, &'n Node) -> Option<T>,
    ) -> Named<T> {
        let mut named = Named::default();
        let Value::Map(pairs) = &node.value else {
            if node.value != Value::Null {
                self.type_error(node, &format!("a mapping of {what}s"));
            }
            return named;
        };
        let mut seen: HashMap<String, Span> = HashMap::new();
        for (key, value) in pairs {
            let Some(name) = key
                .scalar_text()
                .filter(|_| !matches!(key.value, Value::Null))
            else {
                self.type_error(key, &format!("a {what} name"));
                continue;
            };
            if seen.contains_key(&name) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateKey,
                        key.span,
                        format!("duplicate {what} `{name}`"),
                    )
                    .label("declared again here")
                    .help(format!(
                        "each {what} is declared once; rename or remove one"
                    )),
                );
                continue;
            }
            seen.insert(name.clone(), key.span);
            if check_names {
                if let Some(problem) = name_problem(&name) {
                    self.invalid(
                        key.span,
                        format!("`{name}` is not a valid {what} name"),
                        format!("{problem} (`[A-Za-z][A-Za-z0-9_-]*`, at most 64)"),
                    );
                    continue;
                }
            }
            if let Some(v) = item(self, key, value) {
                named.0.push((Sp::new(name, key.span), v));
            }
        }
        named
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Str(s) => Some(Sp::new(s.clone(), node.span)),
            _ => {
                self.type_error(node, what);
                None
            }
        }
    }

    /// A reference to a job, channel or executor by name.
    fn name_ref(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        let s = self.string(node, &format!("a {what} name"))?;
        if let Some(problem) = name_problem(&s.value) {
            self.invalid(
                s.span,
                format!("`{}` is not a valid {what} name", s.value),
                problem,
            );
            return None;
        }
        Some(s)
    }

    fn uint(&mut self, node: &Node, min: u32, max: u32, what: &str) -> Option<Sp<u32>> {
        match node.value {
            Value::Int(i) if i >= min as i64 && i <= max as i64 => {
                Some(Sp::new(i as u32, node.span))
            }
            Value::Int(i) => {
                self.invalid(
                    node.span,
                    format!("{what} must be between {min} and {max}, not {i}"),
                    format!("use a whole number from {min} to {max}"),
                );
                None
            }
            _ => {
                self.type_error(node, &format!("a whole number ({what})"));
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node) -> Option<Sp<bool>> {
        match &node.value {
            Value::Bool(b) => Some(Sp::new(*b, node.span)),
            Value::Str(word)
                if matches!(
                    word.to_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n"
                ) =>
            {
                let meant = matches!(word.to_lowercase().as_str(), "yes" | "on" | "y");
                self.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        format!("`{word}` is a string, not a boolean"),
                    )
                    .label("not a boolean")
                    .help(format!(
                        "only `true` and `false` are booleans here; write `{meant}`"
                    )),
                );
                None
            }
            _ => {
                self.type_error(node, "`true` or `false`");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, positive: bool) -> Option<Sp<Dur>> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            _ => {
                self.type_error(node, "a duration such as `5s`");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) if positive && d.is_zero() => {
                self.invalid(
                    node.span,
                    "a zero duration is not allowed here",
                    "use a positive duration, e.g. `1s`",
                );
                None
            }
            Ok(d) => Some(Sp::new(Dur(d), node.span)),
            Err(e) => {
                self.push(
                    Diagnostic::new(Code::InvalidValue, node.span, e)
                        .label("not a duration")
                        .help("a duration is a number with a unit: `250ms`, `5s`, `1m30s`, `2h`, `1d`"),
                );
                None
            }
        }
    }

    fn datetime(&mut self, node: &Node) -> Option<Sp<DateTimeValue>> {
        let s = self.string(node, "a date-time such as `2026-12-01T10:00:00+01:00`")?;
        match parse_datetime(&s.value) {
            Ok(dt) => Some(Sp::new(DateTimeValue(dt), s.span)),
            Err(e) => {
                self.invalid(
                    s.span,
                    e,
                    "RFC 3339 with an offset, or a local `YYYY-MM-DD HH:MM[:SS]`",
                );
                None
            }
        }
    }

    fn zone(&mut self, node: &Node) -> Option<Sp<Zone>> {
        let s = self.string(node, "an IANA time zone name")?;
        match parse_zone(&s.value) {
            Ok(z) => Some(Sp::new(Zone(z), s.span)),
            Err(e) => {
                let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
                let help = match crate::diagnostics::did_you_mean(&s.value, names.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => "use a name from the IANA database, e.g. `Europe/Berlin`, `America/New_York`, `UTC`".into(),
                };
                self.push(
                    Diagnostic::new(Code::InvalidValue, s.span, e)
                        .label("unknown time zone")
                        .help(help),
                );
                None
            }
        }
    }

    fn keyword<T: Copy>(&mut self, node: &Node, words: &[(&str, T)], what: &str) -> Option<Sp<T>> {
        let allowed: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let list = allowed
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let Some(text) = node.as_str() else {
            self.type_error(node, &format!("one of {list}"));
            return None;
        };
        match words.iter().find(|(w, _)| *w == text) {
            Some((_, v)) => Some(Sp::new(*v, node.span)),
            None => {
                let help = match crate::diagnostics::did_you_mean(text, allowed.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("{what} is one of {list}"),
                };
                self.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        format!("`{text}` is not a valid {what}"),
                    )
                    .label("invalid value")
                    .help(help),
                );
                None
            }
        }
    }

    fn byte_size(&mut self, node: &Node) -> Option<Sp<ByteSize>> {
        let parsed = match &node.value {
            Value::Int(i) if *i > 0 => Some(*i as u64),
            Value::Str(s) => parse_byte_size(s),
            _ => None,
        };
        match parsed {
            Some(n) if n > 0 => Some(Sp::new(ByteSize(n), node.span)),
            _ => {
                self.invalid(
                    node.span,
                    "not a size in bytes",
                    "write a number of bytes, or with a unit: B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB), e.g. `512MiB`",
                );
                None
            }
        }
    }

    /// A share of CPU time: `50%`, or a number of CPUs (`0.5`, `2`); at least 1% and at most 1024 CPUs.
    fn cpu_share(&mut self, node: &Node) -> Option<Sp<CpuShare>> {
        let cpus = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim_end().parse::<f64>().ok())
                .map(|p| p / 100.0),
            _ => None,
        };
        match cpus {
            Some(c) if (0.01..=1024.0).contains(&c) => Some(Sp::new(CpuShare(c), node.span)),
            _ => {
                self.invalid(
                    node.span,
                    "not a share of CPU time",
                    "write a percentage of one CPU (`50%`, `200%` for two) or a number of CPUs (`0.5`), from 1%",
                );
                None
            }
        }
    }

    fn document(&mut self, root: &Node) -> Option<Document> {
        if root.value == Value::Null {
            self.push(
                Diagnostic::new(Code::MissingKey, root.span, "the workflow file is empty")
                    .label("`jobs` is required")
                    .help("declare at least one job under `jobs:`"),
            );
            return None;
        }
        let f = self.fields(
            root,
            &[DOCUMENT_KEYS],
            &["jobs"],
            Span::new(0, 0),
            "the workflow",
        )?;
        let version = f.get("version").and_then(|n| match n.value {
            Value::Int(1) => Some(Sp::new(1, n.span)),
            _ => {
                self.invalid(
                    n.span,
                    "only version 1 of the format exists",
                    "write `version: 1`, or leave it out",
                );
                None
            }
        });
        let name = f.get("name").and_then(|n| self.string(n, "a string"));
        let description = f
            .get("description")
            .and_then(|n| self.string(n, "a string"));
        let executors = f
            .get("executors")
            .map(|n| self.named(n, "executor", true, |d, k, v| d.executor(k, v)));
        let channels = f
            .get("channels")
            .map(|n| self.named(n, "channel", true, |d, k, v| d.channel(k, v)));
        let defaults = f.get("defaults").and_then(|n| {
            if n.value == Value::Null {
                return Some(JobOptions::default());
            }
            let fields = self.fields(n, &[OPTION_KEYS], &[], n.span, "`defaults`")?;
            Some(self.options(&fields))
        });
        let mut defaults = defaults;
        let on_failure = f.get("on_failure").and_then(|n| self.name_ref(n, "job"));
        self.fold_on_failure(on_failure.clone(), &mut defaults);
        let jobs = match f.get("jobs") {
            Some(n) => {
                if let Value::Map(pairs) = &n.value {
                    if pairs.is_empty() {
                        self.invalid(n.span, "`jobs` is empty", "declare at least one job");
                    }
                } else if n.value == Value::Null {
                    self.invalid(n.span, "`jobs` is empty", "declare at least one job");
                }
                self.named(n, "job", true, |d, k, v| d.job(k, v))
            }
            None => Named::default(),
        };
        Some(Document {
            version,
            name,
            description,
            executors,
            channels,
            defaults,
            on_failure,
            jobs,
        })
    }

    fn executor(&mut self, key: &Node, node: &Node) -> Option<ExecutorSpec> {
        if node.value == Value::Null {
            return Some(ExecutorSpec {
                kind: None,
                max_workers: None,
            });
        }
        let f = self.fields(node, &[EXECUTOR_KEYS], &[], key.span, "an executor")?;
        Some(ExecutorSpec {
            kind: f.get("type").and_then(|n| {
                self.keyword(n, &[("process", ExecutorType::Process)], "executor type")
            }),
            max_workers: f
                .get("max_workers")
                .and_then(|n| self.uint(n, 1, 100_000, "max_workers")),
        })
    }

    fn channel(&mut self, key: &Node, node: &Node) -> Option<ChannelSpec> {
        if node.value == Value::Null {
            return Some(ChannelSpec {
                kind: None,
                capacity: None,
                max_message: None,
            });
        }
        let f = self.fields(node, &[CHANNEL_KEYS], &[], key.span, "a channel")?;
        let kinds = [
            ("queue", ChannelKind::Queue),
            ("pipe", ChannelKind::Pipe),
            ("broadcast", ChannelKind::Broadcast),
        ];
        Some(ChannelSpec {
            kind: f
                .get("kind")
                .and_then(|n| self.keyword(n, &kinds, "channel kind")),
            capacity: f
                .get("capacity")
                .and_then(|n| self.uint(n, 1, 10_000_000, "capacity")),
            max_message: f.get("max_message").and_then(|n| self.byte_size(n)),
        })
    }

    fn job(&mut self, key: &Node, node: &Node) -> Option<JobSpec> {
        let name = key.scalar_text().unwrap_or_default();
        let is_job_key =
            JOB_ONLY_KEYS.contains(&name.as_str()) || OPTION_KEYS.contains(&name.as_str());
        let has_run = matches!(&node.value, Value::Map(pairs) if pairs.iter().any(|(k, _)| k.as_str() == Some("run")));
        if is_job_key && !has_run {
            // `trigger:` at the level of the jobs: a key of the job above, indented too little. One error
            // saying so, rather than "no `run`" and unknown keys for everything under it.
            let help = match &self.last_job {
                Some(above) => format!(
                    "indent `{name}:` (and what is under it) under job `{above}`, level with its `run:`"
                ),
                None => format!("`{name}` is a key of a job: put it under one, level with its `run:`"),
            };
            self.push(
                Diagnostic::new(
                    Code::MissingKey,
                    key.span,
                    format!("job `{name}` has no `run`: `{name}` looks like a job key indented too little"),
                )
                .label("a job key at the level of the jobs")
                .help(help),
            );
            return None;
        }
        self.last_job = Some(name.clone());
        let what = format!("job `{name}`");
        let f = self.fields(
            node,
            &[JOB_ONLY_KEYS, OPTION_KEYS],
            &["run"],
            key.span,
            &what,
        )?;
        let run = f.get("run").and_then(|n| self.command(n, "run"));
        let trigger = f.get("trigger").and_then(|n| self.triggers(n));
        let stdin = f.get("stdin").and_then(|n| self.name_ref(n, "channel"));
        let stdout = f.get("stdout").and_then(|n| self.name_ref(n, "channel"));
        let enabled = f.get("enabled").and_then(|n| self.boolean(n));
        let options = self.options(&f);
        // A job whose `run` is missing or bad is kept (with an empty command that can never reach a plan, since
        // its error is already reported) so its channels and links still count and no false warnings follow.
        Some(JobSpec {
            run: run.unwrap_or_else(|| Sp::new(RunSpec::Argv(Vec::new()), key.span)),
            trigger,
            stdin,
            stdout,
            enabled,
            options,
        })
    }

    /// A command: `run`, or an `exec` probe's (`key` names it in messages).
    fn command(&mut self, node: &Node, key: &str) -> Option<Sp<RunSpec>> {
        match &node.value {
            Value::Str(s) if s.trim().is_empty() => {
                self.invalid(
                    node.span,
                    format!("`{key}` is empty"),
                    "give a shell command, or a list: `[program, arg, ...]`",
                );
                None
            }
            Value::Str(s) => Some(Sp::new(RunSpec::Shell(s.clone()), node.span)),
            Value::Seq(items) if items.is_empty() => {
                self.invalid(
                    node.span,
                    format!("`{key}` is an empty list"),
                    "the list is the program and its arguments",
                );
                None
            }
            Value::Seq(items) => {
                let mut argv = Vec::new();
                for item in items {
                    match item
                        .scalar_text()
                        .filter(|_| !matches!(item.value, Value::Null))
                    {
                        Some(s) => argv.push(Sp::new(s, item.span)),
                        None => self.type_error(item, "a string (one argument)"),
                    }
                }
                if argv.len() != items.len() {
                    return None;
                }
                if argv[0].value.is_empty() {
                    self.invalid(
                        argv[0].span,
                        "the program name is empty",
                        "the first item is the program to run",
                    );
                    return None;
                }
                Some(Sp::new(RunSpec::Argv(argv), node.span))
            }
            _ => {
                self.type_error(node, "a command string or a list of arguments");
                None
            }
        }
    }

    fn options(&mut self, f: &Fields) -> JobOptions {
        let restarts = [
            ("never", Restart::Never),
            ("on-failure", Restart::OnFailure),
            ("always", Restart::Always),
        ];
        JobOptions {
            cwd: f.get("cwd").and_then(|n| {
                let s = self.string(n, "a directory path")?;
                if s.value.is_empty() {
                    self.invalid(
                        s.span,
                        "`cwd` is empty",
                        "leave it out to use the workflow file's folder",
                    );
                    return None;
                }
                Some(s)
            }),
            env: f.get("env").map(|n| {
                self.named(n, "environment variable", false, |d, k, v| {
                    let name = k.scalar_text().unwrap_or_default();
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        d.invalid(
                            k.span,
                            format!("`{name}` is not a variable name"),
                            "a name without `=`",
                        );
                        return None;
                    }
                    match &v.value {
                        Value::Seq(_) | Value::Map(_) => {
                            d.type_error(v, "a scalar (string, number or boolean)");
                            None
                        }
                        _ => Some(Sp::new(EnvValue(d.as_written(v)), v.span)),
                    }
                })
            }),
            env_file: f.get("env_file").and_then(|n| self.env_files(n)),
            executor: f.get("executor").and_then(|n| self.name_ref(n, "executor")),
            max_instances: f
                .get("max_instances")
                .and_then(|n| self.uint(n, 1, 100_000, "max_instances")),
            coalesce: f.get("coalesce").and_then(|n| self.boolean(n)),
            misfire_grace: f.get("misfire_grace").and_then(|n| self.duration(n, false)),
            timeout: f.get("timeout").and_then(|n| self.duration(n, true)),
            retry: f.get("retry").and_then(|n| self.retry(n)),
            restart: f.get("restart").and_then(|n| match &n.value {
                Value::Map(_) => self.restart_limit(n, &restarts),
                _ => self
                    .keyword(n, &restarts, "restart policy")
                    .map(|p| Sp::new(RestartSpec::Policy(p.value), p.span)),
            }),
            stop_grace: f.get("stop_grace").and_then(|n| self.duration(n, false)),
            dead_letter: f
                .get("dead_letter")
                .and_then(|n| self.name_ref(n, "channel")),
            ready: f.get("ready").and_then(|n| self.ready(n)),
            alive: f.get("alive").and_then(|n| self.alive(n)),
            limits: f.get("limits").and_then(|n| self.limits(n)),
            user: f.get("user").and_then(|n| self.string(n, "a user name")),
            on_failure: f.get("on_failure").and_then(|n| self.name_ref(n, "job")),
        }
    }

    /// `ready: { log | http | tcp | exec, interval, timeout }`: exactly one kind of probe, checked here (the
    /// regex compiles, the URL is `http://HOST...`, the address is `HOST:PORT`) so a runner never meets one that
    /// cannot work. A probe given but invalid is kept with what could be read (its problems reported here, so no
    /// plan is built): the job has a probe, and `status: ready` on it is not also "no probe".
    fn ready(&mut self, node: &Node) -> Option<Sp<Box<ReadySpec>>> {
        let reported = self.out.len();
        let Some(f) = self.fields(
            node,
            &[PROBE_KINDS, PROBE_TIMING_KEYS],
            &[],
            node.span,
            "`ready`",
        ) else {
            return Some(Sp::new(Box::default(), node.span));
        };
        self.exactly_one(
            &f,
            (PROBE_KINDS, reported),
            node.span,
            ("`ready`", "probe"),
            "give exactly one of `log: REGEX`, `http: URL`, `tcp: HOST:PORT`, `exec: COMMAND`",
        );
        let interval = f.get("interval").and_then(|n| self.duration(n, true));
        let timeout = f.get("timeout").and_then(|n| self.duration(n, true));
        let log = f.get("log").and_then(|n| self.pattern(n));
        let mut vars = Vec::new();
        let http = f.get("http").and_then(|n| self.http_url(n, &mut vars));
        let tcp = f.get("tcp").and_then(|n| self.tcp_address(n, &mut vars));
        let exec = f.get("exec").and_then(|n| self.command(n, "exec"));
        // Boxed: most jobs have no probe, and a document holds one `JobOptions` per job.
        Some(Sp::new(
            Box::new(ReadySpec {
                log,
                http,
                tcp,
                exec,
                vars,
                interval,
                timeout,
            }),
            node.span,
        ))
    }

    /// A probe names exactly one of its `kinds` (`reported`: the diagnostics before it was read; a misspelt kind,
    /// `htp:`, was reported as an unknown key with its suggestion, and "no probe" would repeat it).
    fn exactly_one(
        &mut self,
        f: &Fields,
        (kinds, reported): (&[&str], usize),
        span: Span,
        (key, one): (&str, &str),
        help: &str,
    ) {
        let given: Vec<&str> = kinds
            .iter()
            .copied()
            .filter(|k| f.get(k).is_some())
            .collect();
        let misspelt = given.is_empty() && self.out.len() > reported;
        if given.len() == 1 || misspelt {
            return;
        }
        let message = match given.len() {
            0 => format!("{key} names no {one}"),
            n => format!("{key} has {n} {one}s ({})", given.join(", ")),
        };
        self.push(
            Diagnostic::new(Code::InvalidProbe, span, message)
                .label(format!("one {one} here"))
                .help(help),
        );
    }

    /// `alive: { http | tcp | exec | log-silence, interval, failures }`: exactly one check.
    fn alive(&mut self, node: &Node) -> Option<Sp<Box<AliveSpec>>> {
        let reported = self.out.len();
        let f = self.fields(node, &[ALIVE_KINDS, ALIVE_KEYS], &[], node.span, "`alive`")?;
        self.exactly_one(
            &f,
            (ALIVE_KINDS, reported),
            node.span,
            ("`alive`", "check"),
            "give exactly one of `http: URL`, `tcp: HOST:PORT`, `exec: COMMAND`, `log-silence: DURATION`",
        );
        // Its address's `$NAME`s are filled in at the run's start, as a readiness probe's (not checked here).
        let mut vars = Vec::new();
        let spec = AliveSpec {
            http: f.get("http").and_then(|n| self.http_url(n, &mut vars)),
            tcp: f.get("tcp").and_then(|n| self.tcp_address(n, &mut vars)),
            exec: f.get("exec").and_then(|n| self.command(n, "exec")),
            log_silence: f.get("log-silence").and_then(|n| self.duration(n, true)),
            interval: f.get("interval").and_then(|n| self.duration(n, true)),
            failures: f
                .get("failures")
                .and_then(|n| self.uint(n, 1, 1_000, "failures")),
        };
        Some(Sp::new(Box::new(spec), node.span))
    }

    /// `limits: { memory, cpu, nofile, nproc, nice }`.
    fn limits(&mut self, node: &Node) -> Option<Sp<LimitsSpec>> {
        let f = self.fields(node, &[LIMIT_KEYS], &[], node.span, "`limits`")?;
        let nice = f.get("nice").and_then(|n| match n.value {
            Value::Int(i) if (-20..=19).contains(&i) => Some(Sp::new(i as i32, n.span)),
            _ => {
                self.invalid(
                    n.span,
                    "`nice` is -20 to 19",
                    "19 runs last, -20 first (root only below 0)",
                );
                None
            }
        });
        let spec = LimitsSpec {
            memory: f.get("memory").and_then(|n| self.byte_size(n)),
            cpu: f.get("cpu").and_then(|n| self.cpu_share(n)),
            nofile: f
                .get("nofile")
                .and_then(|n| self.uint(n, 1, 1 << 30, "nofile")),
            nproc: f
                .get("nproc")
                .and_then(|n| self.uint(n, 1, 1 << 30, "nproc")),
            nice,
        };
        Some(Sp::new(spec, node.span))
    }

    fn probe_problem(&mut self, span: Span, message: String, help: &str) {
        self.push(
            Diagnostic::new(Code::InvalidProbe, span, message)
                .label("this probe cannot work")
                .help(help),
        );
    }

    /// A `log` probe's regular expression, compiled.
    fn pattern(&mut self, node: &Node) -> Option<Sp<Pattern>> {
        let text = self.string(node, "a regular expression")?;
        match regex::bytes::Regex::new(&text.value) {
            Ok(regex) => Some(Sp::new(
                Pattern {
                    text: text.value,
                    regex,
                },
                text.span,
            )),
            Err(e) => {
                // The regex crate's message draws the pattern with a caret; its last line says what is wrong.
                let what = e.to_string();
                let what = what
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                let what = what.trim().trim_start_matches("error: ").to_string();
                self.probe_problem(
                    text.span,
                    format!("`{}` is not a regular expression: {what}", text.value),
                    "write a regex (Rust `regex` syntax), e.g. `log: \"listening on .*:8080\"`",
                );
                None
            }
        }
    }

    /// An `http` probe's URL: `http://HOST[:PORT][/PATH]`. One with variables is checked once they are known.
    fn http_url(&mut self, node: &Node, vars: &mut Vec<Sp<String>>) -> Option<Sp<HttpUrl>> {
        let text = self.string(node, "a URL")?;
        let help = "write `http://HOST[:PORT]/PATH`, e.g. `http://127.0.0.1:8080/health`; for https use `exec: curl -fsS https://...`";
        if self.address_vars(&text, vars)? == 0 {
            if let Err(message) = crate::address::http_url(&text.value) {
                self.probe_problem(text.span, message, help);
                return None;
            }
        }
        Some(Sp::new(HttpUrl(text.value), text.span))
    }

    /// A `tcp` probe's `HOST:PORT` (`[::1]:PORT` for an IPv6 address). One with variables is checked once they are
    /// known.
    fn tcp_address(&mut self, node: &Node, vars: &mut Vec<Sp<String>>) -> Option<Sp<String>> {
        let text = self.string(node, "HOST:PORT")?;
        if self.address_vars(&text, vars)? == 0 {
            if let Err(message) = crate::address::tcp_address(&text.value) {
                self.probe_problem(
                    text.span,
                    message,
                    "write the host and the port, e.g. `tcp: 127.0.0.1:5432` or `tcp: \"[::1]:5432\"`",
                );
                return None;
            }
        }
        Some(text)
    }

    /// The variables of a probe's address, added to `vars` each with its place in the file: how many (`None`: a
    /// `${` that is not a variable, reported).
    fn address_vars(&mut self, text: &Sp<String>, vars: &mut Vec<Sp<String>>) -> Option<usize> {
        match crate::address::references(&text.value) {
            Ok(found) => {
                let n = found.len();
                for v in found {
                    let span = field_span(self.source, text.span, &text.value, v.start, v.len);
                    vars.push(Sp::new(v.name, span));
                }
                Some(n)
            }
            Err(bad) => {
                let span = field_span(self.source, text.span, &text.value, bad.start, bad.len);
                self.probe_problem(
                    span,
                    format!("`{}`: {}", text.value, bad.problem),
                    "write `$NAME` or `${NAME}` for a variable of the job's `env`, `$$` for a `$`",
                );
                None
            }
        }
    }

    fn retry(&mut self, node: &Node) -> Option<Sp<RetrySpec>> {
        let f = self.fields(node, &[RETRY_KEYS], &["attempts"], node.span, "`retry`")?;
        let attempts = f
            .get("attempts")
            .and_then(|n| self.uint(n, 1, 1_000, "attempts"));
        let backoff = f.get("backoff").and_then(|n| self.duration(n, false));
        let on = match f.get("on") {
            None => None,
            Some(n) => Some(self.exit_codes(n)?),
        };
        Some(Sp::new(
            RetrySpec {
                attempts: attempts?,
                backoff,
                on,
            },
            node.span,
        ))
    }

    /// `restart: { policy, max, window }`.
    fn restart_limit(&mut self, node: &Node, words: &[(&str, Restart)]) -> Option<Sp<RestartSpec>> {
        let f = self.fields(node, &[RESTART_KEYS], &["policy"], node.span, "`restart`")?;
        let policy = f
            .get("policy")
            .and_then(|n| self.keyword(n, words, "restart policy"));
        let max = f.get("max").and_then(|n| self.uint(n, 1, 1_000_000, "max"));
        let window = f.get("window").and_then(|n| self.duration(n, true));
        Some(Sp::new(
            RestartSpec::Limited(RestartLimit {
                policy: policy?,
                max,
                window,
            }),
            node.span,
        ))
    }

    /// A scalar as the file writes it: `1.10`, `01234`, `0x1F` and `True` stay as they are (a variable's value is
    /// text, which the number or boolean they also read as would change, and a 30-digit number would lose digits).
    /// Through an alias it is the text where it is defined (the YAML reader places such a node there). Should a
    /// node's place still not be its text (an alias, anchor or tag), the value, formatted.
    fn as_written(&self, v: &Node) -> String {
        match &v.value {
            Value::Str(s) => s.clone(),
            Value::Null => String::new(),
            _ => {
                let text = self.source.slice(v.span).trim();
                match text.is_empty() || text.starts_with(['*', '&', '!']) {
                    true => v.scalar_text().unwrap_or_default(),
                    false => text.to_string(),
                }
            }
        }
    }

    /// `env_file: .env` or a list of them: paths (not empty).
    fn env_files(&mut self, node: &Node) -> Option<Sp<OneOrMany<Sp<String>>>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.invalid(
                    node.span,
                    "`env_file` lists no file",
                    "name a dotenv file, e.g. `env_file: .env`, or leave `env_file` out",
                );
                return None;
            }
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut files = Vec::new();
        for n in items {
            match &n.value {
                Value::Str(s) if !s.trim().is_empty() => files.push(Sp::new(s.clone(), n.span)),
                Value::Str(_) => self.invalid(n.span, "an empty file name", "name a dotenv file"),
                _ => self.type_error(n, "a file name"),
            }
        }
        Some(Sp::new(OneOrMany(files), node.span))
    }

    /// `on: [75, 111]` (or one code): exit codes 1 to 255.
    fn exit_codes(&mut self, node: &Node) -> Option<Sp<OneOrMany<Sp<ExitCode>>>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.invalid(
                    node.span,
                    "`on` lists no exit code",
                    "list the exit codes that mean \"try again\", e.g. `on: [75]`, or leave `on` out to retry every failure",
                );
                return None;
            }
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let codes: Vec<Sp<ExitCode>> = items
            .into_iter()
            .filter_map(|n| self.uint(n, 1, 255, "an exit code"))
            .map(|c| Sp::new(ExitCode(c.value), c.span))
            .collect();
        Some(Sp::new(OneOrMany(codes), node.span))
    }

    fn triggers(&mut self, node: &Node) -> Option<Sp<OneOrMany<Sp<TriggerSpec>>>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.invalid(
                    node.span,
                    "the trigger list is empty",
                    "leave `trigger` out to run once at start",
                );
                return None;
            }
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let triggers: Vec<_> = items.into_iter().filter_map(|n| self.trigger(n)).collect();
        Some(Sp::new(OneOrMany(triggers), node.span))
    }

    fn trigger(&mut self, node: &Node) -> Option<Sp<TriggerSpec>> {
        if let Some(word) = node.as_str() {
            return self.trigger_word(node, word);
        }
        let Value::Map(pairs) = &node.value else {
            self.type_error(
                node,
                "a trigger (`start` or a mapping such as `{ interval: 1m }`)",
            );
            return None;
        };
        let kind = self.trigger_kind(node, pairs)?;
        let spec = self.trigger_of_kind(kind, node)?;
        Some(Sp::new(spec, node.span))
    }

    /// A trigger written as a word: `start`, or a mistake said with what was meant.
    fn trigger_word(&mut self, node: &Node, word: &str) -> Option<Sp<TriggerSpec>> {
        if word == "start" {
            return Some(Sp::new(TriggerSpec::Start(StartWord::Start), node.span));
        }
        let help = match crate::diagnostics::did_you_mean(word, TRIGGER_WORDS.iter().copied()) {
            Some("start") => "did you mean `start`?".to_string(),
            None => "a trigger is `start` or a mapping such as `{ interval: 1m }`".to_string(),
            Some(best) => format!("did you mean `{{ {best}: ... }}`?"),
        };
        self.push(
            Diagnostic::new(
                Code::InvalidValue,
                node.span,
                format!("`{word}` is not a trigger"),
            )
            .label("invalid trigger")
            .help(help),
        );
        None
    }

    /// The kind of a trigger mapping: the first of its keys that names one (else that is said).
    fn trigger_kind<'n>(&mut self, node: &Node, pairs: &'n [(Node, Node)]) -> Option<&'n str> {
        let kind = pairs
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .find(|k| TRIGGER_WORDS[1..].contains(k));
        if kind.is_some() {
            return kind;
        }
        let first = pairs.first().map(|(k, _)| k);
        let span = first.map_or(node.span, |k| k.span);
        let word = first.and_then(|k| k.as_str()).unwrap_or("");
        let help = match crate::diagnostics::did_you_mean(word, TRIGGER_WORDS[1..].iter().copied())
            .or(synonym(word))
        {
            Some(best) => format!("did you mean `{best}`?"),
            None => "a trigger mapping has one of `cron`, `interval`, `at`, `after`, `each`".into(),
        };
        self.push(
            Diagnostic::new(
                Code::UnknownKey,
                span,
                format!("`{word}` is not a kind of trigger"),
            )
            .label("unknown trigger")
            .help(help),
        );
        None
    }

    /// A top-level `on_failure` is the default of every job (as under `defaults`); given in both places, it is
    /// an error.
    fn fold_on_failure(&mut self, top: Option<Sp<String>>, defaults: &mut Option<JobOptions>) {
        let Some(top) = top else { return };
        let options = defaults.get_or_insert_with(JobOptions::default);
        match &options.on_failure {
            Some(_) => self.push(
                Diagnostic::new(
                    Code::ConflictingKeys,
                    top.span,
                    "`on_failure` is given at the top and under `defaults`",
                )
                .label("given twice")
                .help("keep one of them"),
            ),
            None => options.on_failure = Some(top),
        }
    }

    /// A trigger mapping of a known kind, its fields decoded.
    fn trigger_of_kind(&mut self, kind: &str, node: &Node) -> Option<TriggerSpec> {
        Some(match kind {
            "cron" => {
                let f = self.fields(node, &[CRON_KEYS], &[], node.span, "a cron trigger")?;
                let cron = f.get("cron").and_then(|n| self.cron(n));
                let timezone = f.get("timezone").and_then(|n| self.zone(n));
                let jitter = f.get("jitter").and_then(|n| self.duration(n, false));
                TriggerSpec::Cron(CronTrigger {
                    cron: cron?,
                    timezone,
                    jitter,
                })
            }
            "interval" => {
                let f = self.fields(
                    node,
                    &[INTERVAL_KEYS],
                    &[],
                    node.span,
                    "an interval trigger",
                )?;
                let interval = f.get("interval").and_then(|n| self.duration(n, true));
                let jitter = f.get("jitter").and_then(|n| self.duration(n, false));
                let start = f.get("start").and_then(|n| self.datetime(n));
                let end = f.get("end").and_then(|n| self.datetime(n));
                let timezone = f.get("timezone").and_then(|n| self.zone(n));
                TriggerSpec::Interval(IntervalTrigger {
                    interval: interval?,
                    jitter,
                    start,
                    end,
                    timezone,
                })
            }
            "at" => {
                let f = self.fields(node, &[AT_KEYS], &[], node.span, "an at trigger")?;
                let at = f.get("at").and_then(|n| self.datetime(n));
                let timezone = f.get("timezone").and_then(|n| self.zone(n));
                TriggerSpec::At(AtTrigger { at: at?, timezone })
            }
            "after" => {
                let f = self.fields(node, &[AFTER_KEYS], &[], node.span, "an after trigger")?;
                let status = f.get("status").and_then(|n| self.status(n));
                let (after, inner) = match f.get("after") {
                    Some(n) if matches!(n.value, Value::Map(_)) => self.any_of(n)?,
                    Some(n) => {
                        let list = self.job_list(n)?;
                        let span = list.span;
                        let names = AfterList {
                            names: list.value,
                            any: false,
                        };
                        (Sp::new(names, span), None)
                    }
                    None => return None,
                };
                if let (Some(inner), Some(_)) = (&inner, &status) {
                    self.invalid(
                        inner.span,
                        "`status` is given twice: inside `after` and beside it",
                        "keep one",
                    );
                }
                TriggerSpec::After(AfterTrigger {
                    after,
                    status: inner.or(status),
                })
            }
            _ => {
                let f = self.fields(node, &[EACH_KEYS], &[], node.span, "an each trigger")?;
                let each = f.get("each").and_then(|n| self.name_ref(n, "channel"));
                let batch = f
                    .get("batch")
                    .and_then(|n| self.uint(n, 1, 1_000_000, "batch"));
                TriggerSpec::Each(EachTrigger { each: each?, batch })
            }
        })
    }

    /// `{ any: [a, b], status: failure }` inside `after`: the jobs, and the status if given there.
    fn any_of(&mut self, node: &Node) -> Option<(Sp<AfterList>, Option<Sp<Status>>)> {
        let f = self.fields(node, &[&["any", "status"]], &["any"], node.span, "`after`")?;
        let status = f.get("status").and_then(|n| self.status(n));
        let list = f.get("any").and_then(|n| self.job_list(n))?;
        let names = AfterList {
            names: list.value,
            any: true,
        };
        Some((Sp::new(names, list.span), status))
    }

    fn status(&mut self, node: &Node) -> Option<Sp<Status>> {
        let statuses = [
            ("success", Status::Success),
            ("failure", Status::Failure),
            ("any", Status::Any),
            ("ready", Status::Ready),
        ];
        self.keyword(node, &statuses, "status")
    }

    fn job_list(&mut self, node: &Node) -> Option<Sp<OneOrMany<Sp<String>>>> {
        let names: Vec<Sp<String>> = match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.invalid(node.span, "`after` lists no job", "name at least one job");
                return None;
            }
            Value::Seq(items) => items
                .iter()
                .filter_map(|n| self.name_ref(n, "job"))
                .collect(),
            _ => vec![self.name_ref(node, "job")?],
        };
        Some(Sp::new(OneOrMany(names), node.span))
    }

    fn cron(&mut self, node: &Node) -> Option<Sp<CronExpr>> {
        let s = self.string(node, "a cron expression")?;
        // Each distinct expression is parsed once: thousands of jobs share a few hundred schedules.
        let parsed = match self.crons.get(&s.value) {
            Some(parsed) => parsed.clone(),
            None => {
                let parsed = crate::schedule::cron::parse(&s.value);
                self.crons.insert(s.value.clone(), parsed.clone());
                parsed
            }
        };
        match parsed {
            Ok(cron) => Some(Sp::new(
                CronExpr {
                    text: s.value,
                    cron,
                },
                s.span,
            )),
            Err(e) => {
                let span = match e.field {
                    Some((start, len)) => field_span(self.source, s.span, &s.value, start, len),
                    None => whole(self.source, s.span),
                };
                self.push(
                    Diagnostic::new(Code::InvalidCron, span, e.message)
                        .label(e.label)
                        .help(e.help),
                );
                None
            }
        }
    }
}

/// The span of bytes `start..start+len` of a scalar's value inside the file. A plain scalar maps one to one, a
/// quoted one-line scalar through its quotes and escapes (an escape inside the field is covered whole); in a
/// folded or multi-line one the field is found where it stands when it stands there once; otherwise the whole
/// scalar.
fn field_span(source: &Source, scalar: Span, value: &str, start: usize, len: usize) -> Span {
    let raw = source.slice(scalar);
    if raw == value {
        return scalar.sub(start, len);
    }
    if let Some(map) = crate::text::quoted::byte_sources(raw, value) {
        if let (Some(first), Some(last)) = (map.get(start), map.get((start + len).wrapping_sub(1)))
        {
            return scalar.sub(first.0, last.1 - first.0);
        }
    }
    let field = value.get(start..start + len).unwrap_or("");
    // Escapes over several lines: the text found may be another field's (`\x39\x39` reads as `99`).
    let escaped = raw.starts_with('"') && raw.contains('\\');
    if !field.trim().is_empty() && !escaped {
        let mut found = raw.match_indices(field);
        if let (Some((at, _)), None) = (found.next(), found.next()) {
            return scalar.sub(at, len);
        }
    }
    whole(source, scalar)
}

/// A scalar's whole span, without the line breaks and indentation a block scalar's span ends with (they belong to
/// the next line: a label there would point at the next key). An empty block scalar is shown by its header
/// (`>-`, `|`), which stands before it.
fn whole(source: &Source, scalar: Span) -> Span {
    let text = source.slice(scalar).trim_end();
    if !text.is_empty() {
        return Span::new(scalar.offset, text.len());
    }
    let before = source.text.get(..scalar.offset).unwrap_or("").trim_end();
    let header = before.rsplit([' ', '\t', '\n']).next().unwrap_or("");
    match header.starts_with(['>', '|']) {
        true => Span::new(before.len() - header.len(), header.len()),
        false => Span::new(scalar.offset, 0),
    }
}

/// "did you mean" for a key: the nearest spelling, else what other tools call it, else the list.
fn key_help(name: &str, candidates: &[&str]) -> String {
    if crate::diagnostics::did_you_mean(name, candidates.iter().copied()).is_none() {
        if let Some(ours) = key_synonym(name).filter(|k| candidates.contains(k)) {
            return format!("did you mean `{ours}`?");
        }
    }
    suggestion_help(name, candidates, "key")
}

/// Job keys as other tools spell them (GitHub Actions, docker-compose, process-compose, Dagu, APScheduler).
fn key_synonym(name: &str) -> Option<&'static str> {
    match name.to_lowercase().as_str() {
        "command" | "cmd" | "script" | "exec" | "shell" | "func" => Some("run"),
        "schedule" | "triggers" | "on" | "when" | "depends_on" | "needs" => Some("trigger"),
        "workdir" | "working_dir" | "working-directory" | "working_directory" | "dir"
        | "directory" => Some("cwd"),
        "environment" | "vars" | "variables" => Some("env"),
        "retries" | "max_retries" => Some("retry"),
        "restart_policy" => Some("restart"),
        "input" => Some("stdin"),
        "output" => Some("stdout"),
        "misfire_grace_time" => Some("misfire_grace"),
        "timeout_seconds" | "timeout-minutes" | "timeout_minutes" => Some("timeout"),
        "type" => Some("kind"),
        _ => None,
    }
}

/// What other schedulers call our trigger kinds (APScheduler, GitHub Actions, Dagu, process-compose).
fn synonym(word: &str) -> Option<&'static str> {
    match word.to_lowercase().as_str() {
        "every" | "seconds" | "minutes" | "hours" | "period" | "repeat" => Some("interval"),
        "schedule" | "crontab" | "cron_expression" => Some("cron"),
        "once" | "date" | "run_date" | "when" => Some("at"),
        "needs" | "depends_on" | "depends" | "requires" => Some("after"),
        "for_each" | "foreach" | "on_message" | "per_message" => Some("each"),
        _ => None,
    }
}

fn missing_help(key: &str) -> String {
    match key {
        "run" => "add `run: <command>` (a shell string or a list of arguments)".into(),
        "jobs" => "declare the jobs under `jobs:`".into(),
        "attempts" => "add `attempts: N`, the number of tries after a failure".into(),
        _ => format!("add `{key}`"),
    }
}

fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..split].parse().ok()?;
    let factor: u64 = match text[split..].trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "KB" => 1_000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        "T" | "TiB" => 1 << 40,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    /// The keys the decoder accepts are the keys of the document types (whose JSON Schema is published): one
    /// source, checked.
    #[test]
    fn key_lists_match_the_document_types() {
        let schema: serde_json::Value =
            serde_json::from_str(&crate::document::json_schema()).unwrap();
        let props = |v: &serde_json::Value| {
            let mut keys: Vec<String> = v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        let sorted = |lists: &[&[&str]]| {
            let mut keys: Vec<String> = lists
                .iter()
                .flat_map(|l| l.iter().map(|k| k.to_string()))
                .collect();
            keys.sort();
            keys
        };
        let defs = &schema["definitions"];
        assert_eq!(props(&schema), sorted(&[DOCUMENT_KEYS]));
        assert_eq!(props(&defs["ExecutorSpec"]), sorted(&[EXECUTOR_KEYS]));
        assert_eq!(props(&defs["ChannelSpec"]), sorted(&[CHANNEL_KEYS]));
        assert_eq!(props(&defs["JobOptions"]), sorted(&[OPTION_KEYS]));
        assert_eq!(
            props(&defs["JobSpec"]),
            sorted(&[OPTION_KEYS, JOB_ONLY_KEYS])
        );
        assert_eq!(props(&defs["RetrySpec"]), sorted(&[RETRY_KEYS]));
        assert_eq!(props(&defs["RestartLimit"]), sorted(&[RESTART_KEYS]));
        assert_eq!(
            props(&defs["ReadySpec"]),
            sorted(&[PROBE_KINDS, PROBE_TIMING_KEYS])
        );
        assert_eq!(props(&defs["CronTrigger"]), sorted(&[CRON_KEYS]));
        assert_eq!(props(&defs["IntervalTrigger"]), sorted(&[INTERVAL_KEYS]));
        assert_eq!(props(&defs["AtTrigger"]), sorted(&[AT_KEYS]));
        assert_eq!(props(&defs["AfterTrigger"]), sorted(&[AFTER_KEYS]));
        assert_eq!(props(&defs["EachTrigger"]), sorted(&[EACH_KEYS]));
    }

    use super::*;

    fn problems(text: &str) -> Vec<(Code, String)> {
        let root = crate::text::yaml::parse(text).unwrap();
        let source = Source::new("t.yaml", text.to_string());
        let mut out = Vec::new();
        decode(&root, &source, &mut out);
        out.into_iter()
            .map(|d| (d.code, text[d.span.offset..d.span.end()].to_string()))
            .collect()
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let p = problems("jobs:\n  a:\n    run: x\n    tigger: start\n");
        assert_eq!(p, [(Code::UnknownKey, "tigger".to_string())]);
    }

    #[test]
    fn bare_number_duration_is_invalid() {
        let p = problems("jobs:\n  a:\n    run: x\n    timeout: 5\n");
        assert_eq!(p, [(Code::InvalidValue, "5".to_string())]);
    }

    #[test]
    fn cron_label_is_on_the_bad_field() {
        let p = problems("jobs:\n  a:\n    run: x\n    trigger: { cron: \"0 25 * * *\" }\n");
        assert_eq!(p, [(Code::InvalidCron, "25".to_string())]);
    }

    #[test]
    fn cron_label_finds_the_field_in_folded_multi_line_and_escaped_strings() {
        let cron = |value: &str| {
            problems(&format!(
                "jobs:\n  a:\n    run: x\n    trigger:\n      cron: {value}\n  b: {{ run: x }}\n"
            ))
        };
        let p = cron(">-\n        0 0 32 * *");
        assert_eq!(p, [(Code::InvalidCron, "32".to_string())]);
        let p = cron("0 0 *\n        * FOO");
        assert_eq!(p, [(Code::InvalidCron, "FOO".to_string())]);
        let p = cron("\"0\\t25 * * *\"");
        assert_eq!(p, [(Code::InvalidCron, "25".to_string())]);
        let p = cron("\"0 0 3\\x32 * *\"");
        assert_eq!(p, [(Code::InvalidCron, "3\\x32".to_string())]);
        let p = cron("'0 0 * * ''x'''");
        assert_eq!(p, [(Code::InvalidCron, "''x''".to_string())]);
        // Over several lines with escapes: the whole scalar, never another field that reads the same.
        let p = cron("\"0 \\x39\\x39\n        */99 * *\"");
        assert_eq!(
            p,
            [(
                Code::InvalidCron,
                "\"0 \\x39\\x39\n        */99 * *\"".to_string()
            )]
        );
        // A field that stands in several places: the whole scalar, but not the line break after a block scalar.
        let p = cron(">-\n        0 0 * * 0 0");
        assert_eq!(p, [(Code::InvalidCron, "0 0 * * 0 0".to_string())]);
        // An empty block scalar: its header, not the next key.
        for header in [">-", "|", "|+"] {
            let p = cron(&format!("{header}\n"));
            assert_eq!(p, [(Code::InvalidCron, header.to_string())], "{header}");
        }
    }

    #[test]
    fn other_tools_spellings_are_recognised() {
        let p = problems("jobs:\n  a:\n    command: make\n    working_dir: /tmp\n    run: x\n    coalesce: yes\n");
        assert_eq!(
            p.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            [Code::UnknownKey, Code::UnknownKey, Code::InvalidValue]
        );
        let root = crate::text::yaml::parse("jobs:\n  a: { command: make, run: x }\n").unwrap();
        let source = Source::new("t.yaml", String::new());
        let mut out = Vec::new();
        decode(&root, &source, &mut out);
        assert_eq!(out[0].help.as_deref(), Some("did you mean `run`?"));
        assert_eq!(synonym("every"), Some("interval"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_byte_size("64KiB"), Some(65536));
        assert_eq!(parse_byte_size("12"), Some(12));
        assert_eq!(parse_byte_size("x"), None);
    }

    #[test]
    fn missing_run_points_at_the_job_name() {
        let p = problems("jobs:\n  worker:\n    stdout: c\n");
        assert_eq!(p, [(Code::MissingKey, "worker".to_string())]);
    }
}
