//! `flowrun man`: one man page for the whole tool.

use crate::cli::Cli;

/// One man page for the whole tool: the top level by clap_mangen, then every command with its usage and options
/// (folded in: there are no per-command pages), the workflow file's format, the exit status, the environment and
/// the files.
pub fn page() -> std::io::Result<String> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // Each of clap_mangen's sections starts with the same quote-string preamble: keep the first only.
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let rendered = String::from_utf8_lossy(&out);
    let mut text = match rendered.split_once(preamble) {
        Some((before, after)) => format!("{before}{preamble}{}", after.replace(preamble, "")),
        None => rendered.into_owned(),
    };
    text.push_str(&commands(cmd));
    text.push_str(FILE_FORMAT);
    text.push_str(&roff_sections());
    Ok(text)
}

fn roff(s: &str) -> String {
    s.replace('\\', "\\\\").replace('-', "\\-")
}

/// Every command with its usage and every option, read from clap's definition: what `--help` says, the man page
/// says, and a new option needs nothing here.
fn commands(mut cmd: clap::Command) -> String {
    // Built, each command knows its full name (`flowrun trigger`) for its usage line.
    cmd.build();
    let mut text = String::from(".SH COMMANDS\n");
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        let usage = sub.clone().render_usage().to_string();
        text.push_str(&format!(
            ".TP\n\\fBflowrun {}\\fR\n{}\n.br\n{}\n.RS\n",
            sub.get_name(),
            roff(&sub.get_about().map(|a| a.to_string()).unwrap_or_default()),
            roff(usage.trim_start_matches("Usage: ")),
        ));
        for arg in sub
            .get_arguments()
            .filter(|a| a.get_id() != "help" && !a.is_hide_set())
        {
            text.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff(&label(arg)),
                roff(&describe(arg))
            ));
        }
        text.push_str(".RE\n");
    }
    text
}

/// How an argument is written: `-n, --count COUNT`, `--wait`, `JOB...`.
fn label(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    let value = if many { format!("{value}...") } else { value };
    let name = match (arg.get_long(), arg.get_short()) {
        (Some(l), Some(s)) => format!("-{s}, --{l}"),
        (Some(l), None) => format!("--{l}"),
        (None, Some(s)) => format!("-{s}"),
        (None, None) => return value,
    };
    if arg.get_action().takes_values() {
        format!("{name} {value}")
    } else {
        name
    }
}

/// Its help, then the values it takes and its default, as `--help` shows them.
fn describe(arg: &clap::Arg) -> String {
    let mut text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !values.is_empty() {
        text.push_str(&format!(" [possible values: {}]", values.join(", ")));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    if arg.get_action().takes_values() && !defaults.is_empty() {
        text.push_str(&format!(" [default: {}]", defaults.join(", ")));
    }
    text
}

/// The workflow file in brief: every key, one line each (the README has the rules; `flowrun schema` the types).
const FILE_FORMAT: &str = r#".SH "FILE FORMAT"
A workflow file is YAML, one workflow per file. Every key not listed here is an error (\fBflowrun validate\fR names it and suggests the nearest one). Durations are a number with a unit: 250ms, 5s, 1m30s, 2h, 1d. Names of jobs, channels and executors: a letter, then letters, digits, \- and _, at most 64 characters. Date\-times: RFC 3339 (2026\-12\-01T10:00:00+01:00) or local (2026\-12\-01 10:00) in the trigger's timezone.
.PP
.nf
.RS 4
channels:
  readings: { kind: queue, capacity: 1000 }
jobs:
  producer:
    run: ./produce.sh
    trigger: [start, { interval: 1s }]
    stdout: readings
  consumer:
    run: [python3, consume.py]
    stdin: readings
.RE
.fi
.SS "Top level"
.TP
\fBjobs\fR
Required: the jobs, by name.
.TP
\fBversion\fR, \fBname\fR, \fBdescription\fR
Optional: 1 (the only version); the workflow's name (default the file's stem); free text.
.TP
\fBexecutors\fR
Process pools, by name. \fBtype\fR: process (the only type); \fBmax_workers\fR: runs of its jobs alive at once, further runs wait in order. \fBdefault\fR always exists with 10 workers.
.TP
\fBchannels\fR
Every channel a job touches, by name. \fBkind\fR: queue (the default: each line goes to one reader run), pipe (one OS pipe between one writer and one reader job) or broadcast (every reader job gets every line); \fBcapacity\fR: lines waiting before writers are held back (1024); \fBmax_message\fR: the longest line (1MiB). Queues are held in the runner's memory: lines still waiting when it exits are counted in the summary and lost.
.TP
\fBdefaults\fR
Job keys for every job that does not set them (not run, stdin, stdout, trigger, enabled).
.TP
\fBon_failure\fR
As on_failure under defaults: a job fired for every run of any job that failed for good.
.SS Jobs
.TP
\fBrun\fR
Required. A string runs with /bin/sh \-c; a list is an argv run directly.
.TP
\fBtrigger\fR
One trigger or a list (see Triggers); default start.
.TP
\fBcwd\fR, \fBenv\fR, \fBenv_file\fR
Working directory (default: the file's folder); variables added to the environment; dotenv files read at each run's start (env wins).
.TP
\fBstdin\fR, \fBstdout\fR
A channel read on standard input; a channel fed by standard output (else its lines are printed, prefixed job#run).
.TP
\fBexecutor\fR, \fBmax_instances\fR
The executor whose workers its runs take (default: \fBdefault\fR); runs alive at once (1): a firing beyond it is skipped.
.TP
\fBcoalesce\fR, \fBmisfire_grace\fR
Several due firings run once (true); a firing later than this is missed (1s).
.TP
\fBtimeout\fR, \fBstop_grace\fR
A run past the timeout is stopped and fails; time between SIGTERM and SIGKILL when a run is stopped (5s).
.TP
\fBretry\fR
{ attempts: N, backoff: DUR, on: [CODES] }: a failed run is tried again, the wait doubling.
.TP
\fBrestart\fR
never, on\-failure, always, or { policy, max, window }: a service is started again when it exits.
.TP
\fBdead_letter\fR
A channel for the lines of an each run that failed its last attempt.
.TP
\fBready\fR
A readiness probe: { log: REGEX }, { http: URL }, { tcp: HOST:PORT } or { exec: CMD }, with interval and timeout. In a URL or HOST:PORT, $NAME and ${NAME} are the job's variables (env, env_file), put in at each run's start.
.TP
\fBalive\fR
A liveness probe: { http: URL }, { tcp: HOST:PORT }, { exec: CMD } or { log\-silence: DUR }, with interval (10s) and failures (3): once the run is ready (or started, without ready), that many failed checks in a row stop it, and it ends unhealthy (restart applies).
.TP
\fBlimits\fR, \fBuser\fR
{ memory: SIZE, cpu: 50%, nofile: N, nproc: N, nice: \-20..19 }: memory and cpu through a cgroup of the run where one can be made (else memory as its address space, and cpu not held), the rest set in the child before it starts; the user each run starts as (the runner must be root).
.TP
\fBon_failure\fR
A job fired once for every run of this job that failed for good, told which in FLOWRUN_UPSTREAM (also under defaults, or at the top of the file for every job).
.TP
\fBenabled\fR
false: validated, but its triggers never fire (flowrun trigger and \-\-only still run it).
.SS Triggers
.TP
\fBstart\fR
Once, when the runner starts.
.TP
{ \fBcron\fR: EXPR, \fBtimezone\fR: TZ, \fBjitter\fR: DUR }
On every match: 5 fields (minute hour day\-of\-month month day\-of\-week, 0 or 7 Sunday), 6 with leading seconds, or @hourly, @daily, @weekly, @monthly, @yearly.
.TP
{ \fBinterval\fR: DUR, \fBjitter\fR, \fBstart\fR, \fBend\fR, \fBtimezone\fR }
Every DUR on a fixed grid, first at the runner's start + DUR (or at start), never after end.
.TP
{ \fBat\fR: DATETIME, \fBtimezone\fR: TZ }
Once.
.TP
{ \fBafter\fR: JOB or [JOBS], \fBstatus\fR: success | failure | any | ready }
When each listed job has ended a run with that status (default success), or has a run that became ready. With \fBafter\fR: { \fBany\fR: [JOBS], \fBstatus\fR }, when the first of them does, each time.
.TP
{ \fBeach\fR: CHANNEL, \fBbatch\fR: N }
Once per line of the channel (or per batch of up to N), the lines on the run's standard input.
"#;

fn roff_sections() -> String {
    [
        ".SH \"EXIT STATUS\"",
        "Running: 0 every run that ended succeeded (runs stopped at shutdown do not count), or a stop asked for (SIGTERM, one SIGINT, flowrun stop) went cleanly, whatever failed before; 1 the work ended (or \\-\\-for elapsed) after a run or a message failed for good, or a stop asked for had to kill a run after its grace; 2 the workflow is invalid or unreadable, or the arguments are wrong (nothing started); 130 a second SIGINT forced the stop. SIGHUP reloads the file.",
        ".PP",
        "validate: 0 no errors (and no warnings with \\-\\-deny\\-warnings); 1 otherwise; 2 a file could not be read.",
        ".SH ENVIRONMENT",
        ".TP\n\\fBNO_COLOR\\fR\nNo colours.",
        ".TP\n\\fBFLOWRUN_STATE\\fR\nThe state directory when \\-\\-state is not given (\\fBnone\\fR: no state).",
        ".TP\n\\fBFLOWRUN_TOKEN\\fR\nThe bearer token that clients of \\-\\-listen send to change anything (without it TCP is read\\-only, and loopback only); not passed on to the jobs.",
        ".TP\n\\fBXDG_STATE_HOME\\fR\nThe default state lives in $XDG_STATE_HOME/flowrun/NAME\\-HASH (~/.local/state when unset).",
        ".TP\n\\fBTZ\\fR\nThe zone of triggers without a timezone, and of local date\\-times (else /etc/localtime).",
        ".TP\n\\fBFLOWRUN_JOB\\fR, \\fBFLOWRUN_RUN\\fR, \\fBFLOWRUN_WORKFLOW\\fR, \\fBFLOWRUN_SCHEDULED\\fR\nGiven to every run: its job, its number, the workflow file, its scheduled time; a run fired by \\fBafter\\fR also gets \\fBFLOWRUN_UPSTREAM\\fR (JSON: the runs that completed its join, or became ready for \\fBstatus: ready\\fR). A \\fBready\\fR probe of type \\fBexec\\fR runs with the same variables.",
        ".SH FILES",
        ".TP\n\\fIFILE\\fR\nThe workflow: YAML, at most 4 MiB, UTF\\-8. Its format is the JSON Schema printed by \\fBflowrun schema\\fR (schemas/workflow.schema.json in the sources, for yaml\\-language\\-server).",
        ".TP\n\\fIDIR\\fR/\\fIJOB\\fR/\\fIRUN\\fR.log\nWith \\-\\-log\\-dir: each run's output, between a header and a footer line.",
        ".TP\n\\fISTATE\\fR/state.db, \\fISTATE\\fR/logs/\\fIJOB\\fR/\\fIRUN\\fR.log, \\fISTATE\\fR/runner.lock\nThe state: history, the last handled firing of each time trigger and the run counters (SQLite, WAL); each run's output; the pid of the runner holding the state. STATE is \\-\\-state, else $FLOWRUN_STATE, else $XDG_STATE_HOME/flowrun/NAME\\-HASH; \\fBflowrun status FILE\\fR prints it.",
        ".TP\n\\fISTATE\\fR/control.sock\nThe control API (HTTP over a Unix socket, mode 0600) while a runner is up: \\fBcurl \\-\\-unix\\-socket STATE/control.sock http://flowrun/api/v1/status\\fR.",
        "",
    ]
    .join("\n")
}
