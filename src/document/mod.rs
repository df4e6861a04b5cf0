//! The workflow file as written (SPEC §2): every value keeps its span so that validation can point at it.
//!
//! These types are filled by `decode` (which collects every problem instead of stopping at the first) and are
//! the source of the JSON Schema (`flowrun schema`), so the schema and the reader cannot drift apart.

pub mod decode;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;
use std::time::Duration;

use crate::text::source::Span;
use crate::values::DateTimeSpec;

/// A value and the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Sp<T> {
    pub fn new(value: T, span: Span) -> Self {
        Sp { value, span }
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A mapping from user-chosen names (jobs, channels, executors, env variables) to values, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T>(pub Vec<(Sp<String>, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<T> Named<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k.value == name).map(|(_, v)| v)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.value.as_str())
    }
}

impl<T: JsonSchema> JsonSchema for Named<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Named_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let values = generator.subschema_for::<T>();
        // Environment variable names follow the shell's rules, not flowrun's name rule.
        if T::schema_name() == "EnvValue" {
            return json_schema!({ "type": "object", "additionalProperties": values });
        }
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,63}$" },
            "additionalProperties": values,
        })
    }
}

/// One value or a list of them (`trigger`, `after`).
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({ "anyOf": [one, { "type": "array", "items": one, "minItems": 1 }] })
    }
}

/// A duration such as `250ms`, `5s`, `1m30s`, `2h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "A number with a unit, several in a row: `250ms`, `5s`, `1m30s`, `2h`, `1d`.",
        })
    }
}

/// An RFC 3339 date-time, or a local one read in the trigger's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeValue(pub DateTimeSpec);

impl JsonSchema for DateTimeValue {
    fn schema_name() -> Cow<'static, str> {
        "DateTime".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "`2026-12-01T10:00:00+01:00`, or a local `2026-12-01T10:00:00` / `2026-12-01 10:00`.",
        })
    }
}

/// An IANA time zone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(pub chrono_tz::Tz);

impl JsonSchema for Zone {
    fn schema_name() -> Cow<'static, str> {
        "TimeZone".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "An IANA time zone, e.g. `Europe/Berlin` or `UTC`." })
    }
}

/// A parsed cron expression with the text it came from.
#[derive(Debug, Clone)]
pub struct CronExpr {
    pub text: String,
    pub cron: crate::schedule::cron::CronSet,
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl JsonSchema for CronExpr {
    fn schema_name() -> Cow<'static, str> {
        "CronExpression".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "5 fields (minute hour day-of-month month day-of-week), 6 with leading seconds, or @yearly, @monthly, @weekly, @daily, @hourly.",
        })
    }
}

/// A size in bytes: a number, or `64KiB`, `1MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+ ?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|K|M|G|T)?$" }
            ]
        })
    }
}

/// A share of CPU time: `50%` of one CPU, `200%` (or `2`) for two.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShare(pub f64);

impl JsonSchema for CpuShare {
    fn schema_name() -> Cow<'static, str> {
        "CpuShare".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "number", "exclusiveMinimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)? ?%$" }
            ]
        })
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(
    deny_unknown_fields,
    title = "flowrun workflow",
    description = "A flowrun workflow file: jobs, their triggers, executors and channels."
)]
pub struct Document {
    /// Format version; only 1 exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: Option<Sp<u32>>,
    /// The workflow's name; defaults to the file's stem.
    pub name: Option<Sp<String>>,
    pub description: Option<Sp<String>>,
    /// Process pools. `default` always exists (10 workers).
    pub executors: Option<Named<ExecutorSpec>>,
    /// Every channel a job touches must be declared here.
    pub channels: Option<Named<ChannelSpec>>,
    /// Job keys applied to every job that does not set them.
    pub defaults: Option<JobOptions>,
    /// A job fired once for every run of any job that failed for good (as `defaults: { on_failure }`).
    pub on_failure: Option<Sp<String>>,
    pub jobs: Named<JobSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum ExecutorType {
    Process,
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ExecutorSpec {
    #[schemars(rename = "type")]
    pub kind: Option<Sp<ExecutorType>>,
    /// Runs of this executor's jobs alive at once.
    #[schemars(range(min = 1))]
    pub max_workers: Option<Sp<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum ChannelKind {
    Queue,
    Pipe,
    Broadcast,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Queue => "queue",
            ChannelKind::Pipe => "pipe",
            ChannelKind::Broadcast => "broadcast",
        }
    }
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ChannelSpec {
    /// `queue` (default), `pipe` or `broadcast`.
    pub kind: Option<Sp<ChannelKind>>,
    /// Messages waiting (per reader for broadcast) before writers are held back. Default 1024.
    #[schemars(range(min = 1))]
    pub capacity: Option<Sp<u32>>,
    /// The longest line a writer may send. Default 1 MiB.
    pub max_message: Option<Sp<ByteSize>>,
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JobSpec {
    /// A string runs through `/bin/sh -c`; a list of strings is executed directly.
    pub run: Sp<RunSpec>,
    /// One trigger or a list; the job fires when any fires. Default `start`.
    pub trigger: Option<Sp<OneOrMany<Sp<TriggerSpec>>>>,
    /// A channel the job reads on standard input.
    pub stdin: Option<Sp<String>>,
    /// A channel the job's standard output feeds.
    pub stdout: Option<Sp<String>>,
    /// `false`: the job is validated but never fires (`--only` and a manual trigger still run it). Default true.
    pub enabled: Option<Sp<bool>>,
    #[schemars(flatten)]
    pub options: JobOptions,
}

/// The job keys that `defaults` may set.
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JobOptions {
    /// Working directory, relative to the workflow file's folder.
    pub cwd: Option<Sp<String>>,
    /// Variables added to the inherited environment.
    pub env: Option<Named<Sp<EnvValue>>>,
    /// Dotenv files (`KEY=VALUE`, quotes, `#` comments, `export`), relative to the workflow's folder, read at each
    /// run's start; `env` wins over them. A missing file fails the run.
    pub env_file: Option<Sp<OneOrMany<Sp<String>>>>,
    /// A declared executor. Default `default`.
    pub executor: Option<Sp<String>>,
    /// Runs alive at once; a firing beyond it is skipped. Default 1.
    #[schemars(range(min = 1))]
    pub max_instances: Option<Sp<u32>>,
    /// Several missed firings run once. Default true.
    pub coalesce: Option<Sp<bool>>,
    /// A firing later than this is dropped. Default 1s.
    pub misfire_grace: Option<Sp<Dur>>,
    /// A run past this is stopped and fails.
    pub timeout: Option<Sp<Dur>>,
    pub retry: Option<Sp<RetrySpec>>,
    /// `never` (default), `on-failure`, `always`, or `{ policy, max, window }` to limit the restarts.
    pub restart: Option<Sp<RestartSpec>>,
    /// Time between SIGTERM and SIGKILL. Default 5s.
    pub stop_grace: Option<Sp<Dur>>,
    /// A channel for the messages of `each` runs that failed their last attempt.
    pub dead_letter: Option<Sp<String>>,
    /// A readiness probe: a run is *ready* once it passes (`after: { status: ready }` waits for that).
    pub ready: Option<Sp<Box<ReadySpec>>>,
    /// A liveness probe: once the run is ready (or started, without `ready`), `failures` failed checks in a row
    /// stop it, and it ends `unhealthy` (so `restart` applies).
    pub alive: Option<Sp<Box<AliveSpec>>>,
    /// Resource limits of each run, applied in the child before it starts.
    pub limits: Option<Sp<LimitsSpec>>,
    /// The user runs are started as (the runner must be root, or be that user).
    pub user: Option<Sp<String>>,
    /// A job fired once for every run of this job that failed for good, with `FLOWRUN_UPSTREAM` naming it.
    pub on_failure: Option<Sp<String>>,
}

/// A readiness probe: exactly one of `log`, `http`, `tcp`, `exec`.
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["log"] }, { "required": ["http"] }, { "required": ["tcp"] }, { "required": ["exec"] }
]))]
pub struct ReadySpec {
    /// A regular expression: ready when a line of the run's printed output (stderr, and stdout when it feeds no
    /// channel) matches.
    pub log: Option<Sp<Pattern>>,
    /// An `http://` URL: ready when a GET answers 2xx.
    pub http: Option<Sp<HttpUrl>>,
    /// `HOST:PORT`: ready when a TCP connection succeeds.
    pub tcp: Option<Sp<String>>,
    /// A command (a string for `/bin/sh -c`, or a list): ready when it exits 0. It runs in the job's folder with
    /// the job's environment.
    pub exec: Option<Sp<RunSpec>>,
    /// The `$NAME` / `${NAME}` of the `http` or `tcp` address, each where it is written: the job's variables, put
    /// in at each run's start (validation checks the names; see `crate::address`).
    #[schemars(skip)]
    pub vars: Vec<Sp<String>>,
    /// Time between checks; one check may take as long, and at least 1s. Default 1s.
    pub interval: Option<Sp<Dur>>,
    /// A run not ready this long after its start is stopped and fails. Default 60s.
    pub timeout: Option<Sp<Dur>>,
}

#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["http"] }, { "required": ["tcp"] }, { "required": ["exec"] }, { "required": ["log-silence"] }
]))]
pub struct AliveSpec {
    /// An `http://` URL: a check passes when a GET answers 2xx.
    pub http: Option<Sp<HttpUrl>>,
    /// `HOST:PORT`: a check passes when a TCP connection succeeds.
    pub tcp: Option<Sp<String>>,
    /// A command (a string for `/bin/sh -c`, or a list): a check passes when it exits 0.
    pub exec: Option<Sp<RunSpec>>,
    /// A check fails when the run printed nothing for this long.
    #[schemars(rename = "log-silence")]
    pub log_silence: Option<Sp<Dur>>,
    /// Time between checks. Default 10s.
    pub interval: Option<Sp<Dur>>,
    /// Failed checks in a row that stop the run. Default 3.
    #[schemars(range(min = 1))]
    pub failures: Option<Sp<u32>>,
}

#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LimitsSpec {
    /// The run's memory (`512MiB`): a cgroup's limit where the runner can make one, else RLIMIT_AS.
    pub memory: Option<Sp<ByteSize>>,
    /// The run's CPU time (`50%` of one CPU, `200%` or `2` for two), through a cgroup.
    pub cpu: Option<Sp<CpuShare>>,
    /// Open files at once (RLIMIT_NOFILE).
    #[schemars(range(min = 1))]
    pub nofile: Option<Sp<u32>>,
    /// Processes of the run's user at once (RLIMIT_NPROC).
    #[schemars(range(min = 1))]
    pub nproc: Option<Sp<u32>>,
    /// Scheduling niceness, -20 (first) to 19 (last).
    #[schemars(range(min = -20, max = 19))]
    pub nice: Option<Sp<i32>>,
}

/// A compiled regular expression with the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub regex: regex::bytes::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Regex".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "A regular expression (Rust `regex` syntax), e.g. `listening on .*:8080`." })
    }
}

/// An `http://HOST[:PORT]/PATH` URL as written: checked by the decoder, or, when it names variables, once they
/// are known (by validation for the job's `env`, at each run's start for what an `env_file` sets).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUrl(pub String);

impl JsonSchema for HttpUrl {
    fn schema_name() -> Cow<'static, str> {
        "HttpUrl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^http://", "description": "An `http://` URL, e.g. `http://127.0.0.1:8080/health`." })
    }
}

/// An environment value: any scalar, turned into a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl JsonSchema for EnvValue {
    fn schema_name() -> Cow<'static, str> {
        "EnvValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub enum RunSpec {
    Shell(#[schemars(length(min = 1))] String),
    Argv(#[schemars(length(min = 1))] Vec<Sp<String>>),
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetrySpec {
    /// Further tries after a failed run.
    #[schemars(range(min = 1))]
    pub attempts: Sp<u32>,
    /// Wait before the first retry; doubles each time, capped at 5m. Default 1s.
    pub backoff: Option<Sp<Dur>>,
    /// Retry only runs that exited with one of these codes (1-255); a run killed by a signal or a timeout is
    /// then not retried. Default: every failure.
    pub on: Option<Sp<OneOrMany<Sp<ExitCode>>>>,
}

/// An exit code that means "try again" (1 to 255).
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct ExitCode(#[schemars(range(min = 1, max = 255))] pub u32);

/// A restart policy, alone or with a limit.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub enum RestartSpec {
    Policy(Restart),
    Limited(RestartLimit),
}

impl RestartSpec {
    pub fn policy(&self) -> Restart {
        match self {
            RestartSpec::Policy(p) => *p,
            RestartSpec::Limited(l) => l.policy.value,
        }
    }
}

/// `{ policy, max, window }`: at most `max` restarts within `window`, then the job has failed for good.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RestartLimit {
    /// `on-failure` or `always`.
    pub policy: Sp<Restart>,
    /// At most this many restarts within `window`. Default: no limit.
    #[schemars(range(min = 1))]
    pub max: Option<Sp<u32>>,
    /// The span `max` counts in. Default: the runner's whole life.
    pub window: Option<Sp<Dur>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(rename_all = "kebab-case")]
pub enum Restart {
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub enum TriggerSpec {
    Start(StartWord),
    Cron(CronTrigger),
    Interval(IntervalTrigger),
    At(AtTrigger),
    After(AfterTrigger),
    Each(EachTrigger),
}

/// The word `start`: fire once when the runner starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum StartWord {
    Start,
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CronTrigger {
    pub cron: Sp<CronExpr>,
    pub timezone: Option<Sp<Zone>>,
    pub jitter: Option<Sp<Dur>>,
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IntervalTrigger {
    pub interval: Sp<Dur>,
    pub jitter: Option<Sp<Dur>>,
    pub start: Option<Sp<DateTimeValue>>,
    pub end: Option<Sp<DateTimeValue>>,
    /// The zone for local `start`/`end` times.
    pub timezone: Option<Sp<Zone>>,
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AtTrigger {
    pub at: Sp<DateTimeValue>,
    pub timezone: Option<Sp<Zone>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
    Any,
    /// The run became ready (its `ready` probe passed), whether or not it ended.
    Ready,
}

impl Status {
    /// What an upstream run must reach, in words: `success`, `failure`, `an end`.
    pub fn goal(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Any => "an end",
            Status::Ready => "readiness",
        }
    }
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AfterTrigger {
    pub after: Sp<AfterList>,
    /// Default `success`.
    pub status: Option<Sp<Status>>,
}

/// The jobs an `after` waits for: all of them (`after: a` or `after: [a, b]`), or the first of them to reach the
/// status (`after: { any: [a, b], status: failure }`).
#[derive(Debug, Clone, PartialEq)]
pub struct AfterList {
    pub names: OneOrMany<Sp<String>>,
    pub any: bool,
}

impl JsonSchema for AfterList {
    fn schema_name() -> Cow<'static, str> {
        "AfterList".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let jobs = generator.subschema_for::<OneOrMany<String>>();
        let status = generator.subschema_for::<Status>();
        json_schema!({
            "anyOf": [
                jobs,
                {
                    "type": "object",
                    "properties": { "any": jobs, "status": status },
                    "required": ["any"],
                    "additionalProperties": false,
                },
            ]
        })
    }
}

#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EachTrigger {
    pub each: Sp<String>,
    #[schemars(range(min = 1))]
    pub batch: Option<Sp<u32>>,
}

/// The draft-07 JSON Schema of the format, as `flowrun schema` prints it.
pub fn json_schema() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<Document>();
    let mut value = schema.to_value();
    // An absent key is how a file leaves an option out; `key: null` is an error for `validate`, so the schema
    // must not offer it either (schemars makes every `Option` nullable).
    drop_null(&mut value);
    // `flatten` copies the flattened struct's description over the job's own.
    value["definitions"]["JobSpec"]["description"] =
        "One job: a command, what fires it, and how it is wired.".into();
    let mut text = serde_json::to_string_pretty(&value).expect("a schema is always serializable");
    text.push('\n');
    text
}

fn drop_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = value else {
        if let Value::Array(items) = value {
            items.iter_mut().for_each(drop_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(options)) = map.get_mut("anyOf") {
        options.retain(|o| o.get("type").is_none_or(|t| t != "null"));
        if options.len() == 1 {
            let only = options.remove(0);
            map.remove("anyOf");
            if let Value::Object(inner) = only {
                for (k, v) in inner {
                    map.entry(k).or_insert(v);
                }
            }
        }
    }
    map.values_mut().for_each(drop_null);
}
