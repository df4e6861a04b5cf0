//! The command line (SPEC §3). `flowrun FILE` is short for `flowrun run FILE`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use crate::diagnostics::render::Format;
use crate::report::Mode;

#[derive(Debug, Parser)]
#[command(
    name = "flowrun",
    version,
    about = "Run a declarative workflow file: jobs, triggers, executors and channels",
    override_usage = "flowrun FILE [OPTIONS]\n       flowrun <COMMAND> [ARGS]",
    // `flowrun FILE ...` runs it: the run options are the top level's own, so `--help` shows them and shell
    // completion offers them after a file.
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  flowrun workflows/queue.yaml            run until Ctrl-C or until the work is done\n  flowrun validate --format github *.yaml  check files in CI\n  flowrun next nightly.yaml -n 3           the next fire times\n  flowrun workflows/services.yaml          a server with a readiness probe, its client, a restart limit\n  flowrun status workflows/services.yaml   what a runner does now (READY: its probe passed)\n\nExit status: 0 every run that ended succeeded, or a stop asked for (SIGTERM, Ctrl-C, flowrun stop) went\ncleanly; 1 a run or a message failed for good (or a stop had to kill a run); 2 the workflow is invalid or\nunreadable, or the arguments are wrong; 130 a second Ctrl-C forced the stop."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Option<RunArgs>,
}

// Every argument that takes a job name has the value name JOB: shell completion finds where job names go by it
// (commands/complete.rs), so a new command taking a job is completed with no change to the scripts.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, then run the workflow until its work is done, `--for` elapses, or SIGINT/SIGTERM.
    Run(RunArgs),
    /// Check workflow files without running anything.
    Validate {
        /// Workflow files; every problem of every file is reported.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// human (a report with the source), json (one document), github (annotations).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the next fire times of time-triggered jobs.
    Next {
        /// The workflow file.
        file: PathBuf,
        /// Only these jobs.
        #[arg(value_name = "JOB")]
        jobs: Vec<String>,
        /// How many fire times per job (1 to 100,000).
        #[arg(short = 'n', long = "count", default_value_t = 5,
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// Start from this date-time instead of now (RFC 3339, or local in the system zone).
        #[arg(long)]
        from: Option<String>,
        /// text (a list per job), json (`{"JOB": ["RFC 3339 time", ...]}`); times in each trigger's zone, with
        /// its offset.
        #[arg(long, value_enum, default_value_t = Mode::Text)]
        format: Mode,
    },
    /// One line per job: running or idle, the last run, the next fire, runs and failures in the last 24 h.
    Status {
        /// The workflow file (its state directory is found by the same rule as the runner's).
        file: PathBuf,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        store: StoreArg,
        /// text (aligned columns, local times), json (for scripts).
        #[arg(long, value_enum, default_value_t = Mode::Text)]
        format: Mode,
    },
    /// The runs, skips and misses of the workflow, newest first.
    History {
        /// The workflow file.
        file: PathBuf,
        /// Only these jobs.
        #[arg(value_name = "JOB")]
        jobs: Vec<String>,
        /// At most this many rows (0: all).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32))]
        limit: u32,
        /// Only rows since this long ago (`2h`, `7d`) or this date-time (RFC 3339, or local).
        #[arg(long, value_name = "DUR|DATETIME")]
        since: Option<String>,
        /// Only failures (failed, timeout, spawn-failed, interrupted, unhealthy).
        #[arg(long)]
        failed: bool,
        /// Each run's tries beneath it (a run's first try and its retries).
        #[arg(long)]
        tries: bool,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        store: StoreArg,
        /// text (aligned columns, local times), json (an array of rows).
        #[arg(long, value_enum, default_value_t = Mode::Text)]
        format: Mode,
    },
    /// Print one run's output (the job's last run by default).
    Logs {
        /// The workflow file.
        file: PathBuf,
        /// The job, or `JOB#N` for its run N (as output lines name runs).
        #[arg(value_name = "JOB")]
        job: String,
        /// The run number (`JOB N` is `JOB#N`); the last run when not given.
        run: Option<u64>,
        /// Keep printing what a live run writes, until it ends.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Fire a job of the running runner now (it obeys max_instances and its executor).
    Trigger {
        /// The workflow file (its runner is found through the state directory).
        file: PathBuf,
        /// The job.
        #[arg(value_name = "JOB")]
        job: String,
        /// Wait for the run to end; exit with its result (0 succeeded, 1 otherwise).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        state: StateArg,
        /// With --store: fire it on one live runner of the cluster, from any host (no local runner needed).
        #[command(flatten)]
        store: StoreArg,
    },
    /// Stop the running runner (as SIGTERM does), or only the live runs of JOB.
    Stop {
        /// The workflow file.
        file: PathBuf,
        /// Only this job's live runs.
        #[arg(value_name = "JOB")]
        job: Option<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Pause a job of the running runner: it fires nothing (its live runs go on) until resumed; remembered
    /// across restarts.
    Pause {
        /// The workflow file.
        file: PathBuf,
        /// The job.
        job: String,
        /// Resume by itself after this long (e.g. `2h`).
        #[arg(long = "for", value_parser = parse_duration_arg)]
        span: Option<std::time::Duration>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Resume a paused job of the running runner.
    Resume {
        /// The workflow file.
        file: PathBuf,
        /// The job.
        job: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Serve the web page of the running runner on a loopback port and print its address with a token.
    Ui {
        /// The workflow file (its runner is found through the state directory).
        file: PathBuf,
        /// The loopback port (0: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Open the page in the desktop's browser (xdg-open).
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Make the running runner read the file again (exit 1 with the diagnostics when the new text is rejected).
    Reload {
        /// The workflow file.
        file: PathBuf,
        #[command(flatten)]
        state: StateArg,
    },
    /// Print the jobs and channels as a graph.
    Graph {
        /// The workflow file.
        file: PathBuf,
        /// mermaid (for Markdown), dot (Graphviz).
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the workflow format.
    Schema,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell); bash, zsh and fish also complete
    /// job names.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

// `flowrun __jobs`, the completion scripts' helper (commands/complete.rs): the job names of FILE, one a line
// (nothing when the file is not valid); with `-- WORDS`, the words of a command line before the one being
// completed, the job names only when a job goes there. Not a command of `Cli`: clap_complete would offer it and the
// man page list it, hidden or not; `main` tells it apart first.
#[derive(Debug, Parser)]
#[command(
    name = "flowrun __jobs",
    bin_name = "flowrun __jobs",
    about = "The job names of FILE, for the shell completion scripts"
)]
pub struct JobsArgs {
    pub file: Option<PathBuf>,
    #[arg(last = true)]
    pub words: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// Stop after this long (e.g. `30s`, `1h`).
    #[arg(long = "for", value_name = "DUR", value_parser = parse_duration_arg)]
    pub run_for: Option<std::time::Duration>,
    /// Print the validated plan and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// The live status area: on a terminal (auto), always, or never.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// `json`: one JSON event per line on stderr (the machine-readable record of the run).
    #[arg(long, value_enum, default_value_t = Mode::Text)]
    pub log_format: Mode,
    /// Write each run's output to DIR/JOB/RUN.log (default with state: STATE/logs).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// The state directory, or `none` to run without memory. Default: $FLOWRUN_STATE, else
    /// $XDG_STATE_HOME/flowrun/NAME-HASH (~/.local/state/flowrun/...).
    // Not the flattened `StateArg`: a flattened group inside the top level's optional `RunArgs` makes clap
    // never build `RunArgs`.
    #[arg(long = "state", value_name = "DIR|none")]
    pub state: Option<String>,
    /// Keep history rows and their logs this long (pruned at start and every hour).
    #[arg(long, value_name = "DUR", default_value = "30d", value_parser = parse_duration_arg)]
    pub keep: std::time::Duration,
    /// Fire just these jobs once, now, ignoring their triggers (channels between them work as usual).
    // Its value name, JOB, is what shell completion goes by.
    #[arg(long, value_name = "JOB", num_args = 1..)]
    pub only: Vec<String>,
    /// Also serve the control API on TCP: HOST:PORT, or PORT alone for 127.0.0.1 (a non-loopback host needs
    /// FLOWRUN_TOKEN).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Reload the workflow when its file changes.
    #[arg(long)]
    pub watch: bool,
    /// Share the workflow with other runners through Redis: redis://[USER:PASSWORD@]HOST:PORT/DB (rediss:// for
    /// TLS). Default: $FLOWRUN_STORE; without either, or with an empty value, this runner is alone.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The cluster's name in the store (default: the workflow's `name`, else the file's stem).
    #[arg(long, value_name = "NAME", requires = "store")]
    pub cluster: Option<String>,
    /// This runner's id in the cluster (default: HOST:STATE-HASH, the same at every start on one state folder).
    #[arg(long, value_name = "ID", requires = "store")]
    pub runner_id: Option<String>,
    /// How long this runner's heartbeat holds without renewal (renewed every third of it); its live runs are
    /// taken over by another runner once it lapses.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_lease)]
    pub lease: std::time::Duration,
}

/// The cluster's store to read from (SPEC §9), instead of this host's state.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArg {
    /// Read the cluster's store: redis://[USER:PASSWORD@]HOST:PORT/DB (default: $FLOWRUN_STORE).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The cluster's name in the store (default: the workflow's `name`, else the file's stem).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

impl StoreArg {
    /// The store given, else $FLOWRUN_STORE.
    pub fn url(&self) -> Option<String> {
        store_url(self.store.as_deref())
    }
}

/// `--store`, else $FLOWRUN_STORE (an empty value is none).
pub fn store_url(given: Option<&str>) -> Option<String> {
    given
        .map(str::to_string)
        .or_else(|| std::env::var("FLOWRUN_STORE").ok())
        .filter(|s| !s.is_empty())
}

/// A lease: at least a second (renewed every third of it), at most a day.
fn parse_lease(text: &str) -> Result<std::time::Duration, String> {
    let lease = parse_duration_arg(text)?;
    if lease < std::time::Duration::from_secs(1) || lease > std::time::Duration::from_secs(86_400) {
        return Err(format!("{text}: a lease is from 1s to 24h"));
    }
    Ok(lease)
}

/// Where the workflow's state lives (SPEC §4).
#[derive(Debug, Clone, clap::Args)]
pub struct StateArg {
    /// The state directory, or `none` to run without memory. Default: $FLOWRUN_STATE, else
    /// $XDG_STATE_HOME/flowrun/NAME-HASH (~/.local/state/flowrun/...).
    #[arg(long = "state", value_name = "DIR|none")]
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::values::parse_duration(s)
}
