//! The commands: each reads its inputs, calls into the library and returns its exit code or an [`Error`].

use chrono::{DateTime, Utc};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Cli, Command, GraphFormat, Progress, RunArgs};
use crate::engine::{Options, Signals};
use crate::error::Error;
use crate::event::Record;
use crate::exit;
use crate::plan::{Plan, Trigger};
use crate::render::{self, FileReport, Format};
use crate::report::{LiveView, Mode, Reporter};
use crate::source::Source;
use crate::validate::Validated;

/// Run a command: its exit code, or the error that stopped it (printed by [`report_error`]).
pub fn main(cli: Cli) -> Result<i32, Error> {
    let command = match (cli.command, cli.run) {
        (Some(command), _) => command,
        (None, Some(args)) => Command::Run(args),
        (None, None) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let _ = cmd.print_help();
            return Err(Error::usage("give a workflow file to run, or a command"));
        }
    };
    match command {
        Command::Validate {
            files,
            format,
            deny_warnings,
        } => Ok(validate_files(&files, format, deny_warnings)),
        Command::Schema => {
            crate::output::print_out(&crate::document::json_schema());
            Ok(exit::OK)
        }
        Command::Next {
            file,
            jobs,
            count,
            from,
            format,
        } => next(&file, &jobs, count as usize, from.as_deref(), format),
        Command::Graph { file, format } => {
            let plan = crate::load::load_plan(&file)?;
            crate::output::print_out(&match format {
                GraphFormat::Mermaid => crate::graph::mermaid(&plan),
                GraphFormat::Dot => crate::graph::dot(&plan),
            });
            Ok(exit::OK)
        }
        Command::Run(args) => run(args),
        Command::Status {
            file,
            state,
            format,
        } => crate::inspect::status(&file, state.dir.as_deref(), format),
        Command::History {
            file,
            jobs,
            limit,
            since,
            failed,
            state,
            format,
        } => crate::inspect::history(
            &file,
            crate::inspect::HistoryArgs {
                jobs: &jobs,
                limit,
                since: since.as_deref(),
                failed,
                state: state.dir.as_deref(),
                format,
            },
        ),
        Command::Logs {
            file,
            job,
            run,
            follow,
            state,
        } => crate::inspect::logs(&file, &job, run, follow, state.dir.as_deref()),
        Command::Trigger {
            file,
            job,
            wait,
            state,
        } => crate::control::commands::trigger(&file, &job, wait, state.dir.as_deref()),
        Command::Stop { file, job, state } => {
            crate::control::commands::stop(&file, job.as_deref(), state.dir.as_deref())
        }
        Command::Reload { file, state } => {
            crate::control::commands::reload(&file, state.dir.as_deref())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "flowrun", &mut out);
            crate::output::print_out(&String::from_utf8_lossy(&out));
            Ok(exit::OK)
        }
        Command::Man => {
            crate::output::print_out(&man_page().map_err(|e| Error::Output(e.to_string()))?);
            Ok(exit::OK)
        }
    }
}

/// Print a command's error: the one place errors are printed.
pub fn report_error(e: &Error) {
    match e {
        Error::Invalid => {}
        Error::Unreadable {
            message,
            json: true,
        } => {
            let line = Record::diagnostic(message.clone()).to_line();
            let _ = std::io::stderr().write_all(&line);
        }
        Error::Usage {
            message,
            help: Some(help),
        } => eprintln!("error: {message}\nhelp: {help}"),
        other => eprintln!(
            "error: {}",
            crate::report::escape_controls(&other.to_string())
        ),
    }
}

/// `flowrun run`: validate, then run on a multi-threaded runtime (its worker threads live as long as the runner,
/// which the parent-death signal needs).
fn run(args: RunArgs) -> Result<i32, Error> {
    crate::engine::process::ensure_standard_fds();
    // Before any thread starts: the token leaves the environment (and the bytes of it that /proc shows).
    let token = crate::secret::take_token()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Setup(format!("the async runtime cannot start: {e}")))?;
    // Handlers first, before validation: a signal that arrives while the file is read or the first runs start
    // must stop the workflow with a summary, not kill the runner.
    let signals = {
        let _guard = runtime.enter();
        Signals::install().map_err(|e| Error::Setup(format!("signal handlers: {e}")))?
    };
    let json = args.log_format == Mode::Json;
    let listen = listen_address(args.listen.as_deref(), token.is_some())?;
    let mut plan = crate::load::load_plan_as(&args.file, json)?;
    if !args.only.is_empty() {
        plan = plan.only(&args.only).map_err(|name| {
            let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            Error::Usage {
                message: format!("--only: `{name}` is not a job of {}", args.file.display()),
                help: Some(crate::diagnostic::suggestion_help(&name, &names, "job")),
            }
        })?;
    }
    // The spanned tree and the document are gone; give their pages back (a large file's validation peaks at
    // several times what the plan keeps, and a long-running runner should not hold that for ever).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    if args.dry_run {
        crate::output::print_out(&crate::dryrun::describe(&plan, Utc::now()));
        return Ok(exit::OK);
    }
    let color = crate::output::color_on_stderr();
    let show_live = match args.progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal() && !json,
    };
    let live = show_live.then(|| {
        let names: Vec<String> = plan.channels.iter().map(|c| c.name.clone()).collect();
        let always = args.progress == Progress::Always;
        LiveView::new(
            plan.jobs.len(),
            &names,
            color,
            always,
            plan.ends_by_itself(),
        )
    });
    let reporter = Arc::new(Reporter::new(
        args.log_format,
        live.as_ref().map(|v| v.multi()),
    ));
    let state = open_state(&args, &plan, &reporter)?;
    // Reading the store back and reserving numbers for every job left freed heap behind: give it back too.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let state_dir = state.as_ref().map(|s| s.dir.clone());
    let (listeners, notice, bound) = {
        let _guard = runtime.enter();
        crate::control::bind(state_dir.as_deref(), listen.map(|(a, _)| a))
    };
    bound.map_err(Error::Setup)?;
    if let Some(notice) = notice {
        reporter.notice(&notice);
    }
    let metrics = Arc::new(crate::control::Metrics::new());
    let observer = {
        let metrics = metrics.clone();
        Arc::new(move |e: &crate::event::Event| metrics.observe(e)) as crate::engine::Observer
    };
    let (file, watch, only) = (args.file.clone(), args.watch, args.only.clone());
    // The API's thread, ended (and its socket removed) once the engine is done.
    let api: Arc<std::sync::Mutex<Option<crate::control::ApiThread>>> = Default::default();
    let api_slot = api.clone();
    let api_reporter = reporter.clone();
    let serve = Box::new(move |engine| {
        let control = crate::control::Context::new(
            engine,
            metrics,
            state_dir,
            file,
            token,
            only,
            api_reporter.clone(),
        );
        match crate::control::serve(listeners, control, watch) {
            Ok(thread) => *api_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread),
            Err(e) => api_reporter.notice(&e),
        }
    });
    let log_dir = log_root(
        args.log_dir.as_deref(),
        state.as_ref().map(|s| s.dir.as_path()),
    )?;
    let options = Options {
        run_for: args.run_for,
        log_dir,
        live,
        color,
        state,
        observers: vec![observer],
        serve: Some(serve),
    };
    let ending = runtime.block_on(crate::engine::run(
        Arc::new(plan),
        reporter.clone(),
        options,
        signals,
    ));
    if let Some(api) = api.lock().unwrap_or_else(|e| e.into_inner()).take() {
        api.stop();
    }
    let ending = ending.map_err(Error::Setup)?;
    reporter.flush();
    // Tasks blocked on pipes of orphaned grandchildren must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(ending.code())
}

/// `--listen HOST:PORT` (a name is resolved; its first address is used), and whether it is loopback. A
/// non-loopback address without a token is refused: anyone on the network could read the runner.
fn listen_address(
    text: Option<&str>,
    has_token: bool,
) -> Result<Option<(std::net::SocketAddr, bool)>, Error> {
    use std::net::ToSocketAddrs;
    let Some(text) = text else {
        return Ok(None);
    };
    // `9090` or `:9090`: loopback, the default host.
    let port_only = text.strip_prefix(':').unwrap_or(text);
    let text = &match port_only.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => text.to_string(),
    };
    let addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage {
            message: format!("--listen `{text}` is not an address to listen on"),
            help: Some("give HOST:PORT, e.g. --listen 127.0.0.1:9090".into()),
        })?;
    let loopback = addr.ip().is_loopback();
    if !loopback && !has_token {
        return Err(Error::Usage {
            message: format!("--listen {addr} is not a loopback address, and FLOWRUN_TOKEN is not set"),
            help: Some(
                "set FLOWRUN_TOKEN (clients then send `Authorization: Bearer TOKEN` to change anything), or listen on 127.0.0.1"
                    .into(),
            ),
        });
    }
    Ok(Some((addr, loopback)))
}

/// The runner's state (SPEC §4): the directory made 0700, the store opened and locked (one runner per state),
/// the runs a dead runner left marked interrupted, what it remembered read back, and the writer started.
fn open_state(
    args: &RunArgs,
    plan: &Plan,
    reporter: &Arc<Reporter>,
) -> Result<Option<crate::engine::Persist>, Error> {
    use crate::store::{dir, SqliteStore, Store};
    let choice = dir::choose(args.state.as_deref(), &args.file, &plan.name);
    let Some(path) = choice.path() else {
        return Ok(None);
    };
    let path = match dir::create(path, matches!(choice, dir::Choice::Default(_))) {
        Ok((path, warning)) => {
            if let Some(w) = warning {
                reporter.notice(&w);
            }
            path
        }
        Err(e) => {
            return match choice {
                dir::Choice::Default(_) => {
                    reporter.notice(&format!(
                    "cannot make the state directory {} ({e}): running without state (no history, no catch-up; --state DIR names another place, --state none silences this)",
                    path.display()
                ));
                    Ok(None)
                }
                _ => Err(Error::Setup(format!(
                    "the state directory {} cannot be used: {e}",
                    path.display()
                ))),
            };
        }
    };
    let path = path.as_path();
    let store_error = Error::from;
    let mut store = SqliteStore::open(path).map_err(store_error)?;
    store.lock().map_err(|e| match (&e, args.only.first()) {
        (crate::store::StoreError::Held { .. }, Some(job)) => Error::Usage {
            message: e.to_string(),
            help: Some(format!(
                "to run {job} now in the running runner: `flowrun trigger {} {job}`",
                args.file.display()
            )),
        },
        _ => store_error(e),
    })?;
    replay_unwritten(&mut store, path, reporter);
    // A store that can be read but not written (a full disk) does not keep the runner from starting: what the
    // start would write goes to the writer, tried again until it is written, and runs wait for their numbers.
    let now = Utc::now();
    let mut later = Vec::new();
    let cannot_write = |e: &crate::store::StoreError| {
        reporter.notice(&format!(
            "the state store cannot be written at the start ({e}): the runner starts; runs wait until it can be"
        ));
    };
    let recovered = match store.recover(now) {
        Ok(n) => n,
        Err(e) if e.cannot_write() => {
            cannot_write(&e);
            later.push(crate::store::Op::Recover { before: now });
            0
        }
        Err(e) => return Err(store_error(e)),
    };
    let memory = store.memory().map_err(store_error)?;
    if !memory.forgotten.is_empty() {
        reporter.notice(&format!(
            "the state remembered firings of {} at times that are not times or lie ahead of the clock (was the clock set back?): their triggers start afresh",
            memory.forgotten.join(", ")
        ));
    }
    // Run numbers are reserved a block ahead before any is given: a crash can leave a gap, never a repeat.
    let numbers_on_disk = match store.apply(&first_blocks(plan, &memory)) {
        Ok(()) => true,
        Err(e) if e.cannot_write() => {
            if later.is_empty() {
                cannot_write(&e);
            }
            false
        }
        Err(e) => return Err(store_error(e)),
    };
    // Pruning deletes log files only under these folders, whatever a history row names.
    let mut log_roots = vec![path.join("logs")];
    log_roots.extend(log_root(args.log_dir.as_deref(), Some(path))?);
    let history = crate::store::writer::History::start(
        Box::new(store),
        args.keep,
        log_roots,
        path.to_path_buf(),
        reporter.clone(),
    );
    history.send_all(&mut later, true);
    Ok(Some(crate::engine::Persist {
        dir: path.to_path_buf(),
        history,
        memory,
        recovered,
        numbers_on_disk,
    }))
}

/// Where run logs go: `--log-dir` (made if missing; its real path, so the history's paths hold no symlink), else
/// the state's `logs/`, which must be a real folder of the runner's user (a planted `logs -> /etc` is refused).
/// Absolute: the history keeps each run's log path, for `logs` and pruning from any working directory.
fn log_root(
    given: Option<&Path>,
    state: Option<&Path>,
) -> Result<Option<std::path::PathBuf>, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let cannot = |dir: &Path, e: std::io::Error| {
        Error::Setup(format!(
            "the log folder {} cannot be used: {e}",
            dir.display()
        ))
    };
    match (given, state) {
        (Some(dir), _) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|_| std::fs::canonicalize(dir))
            .map(Some)
            .map_err(|e| cannot(dir, e)),
        (None, Some(state)) => {
            let dir = state.join("logs");
            crate::store::dir::private_dir(&dir).map_err(|e| cannot(&dir, e))?;
            Ok(Some(dir))
        }
        (None, None) => Ok(None),
    }
}

/// What the last clean stop could not write comes first: its runs' ends, before the runs left `running` are
/// taken for interrupted.
fn replay_unwritten(store: &mut crate::store::SqliteStore, dir: &Path, reporter: &Reporter) {
    match crate::store::writer::replay(store, dir) {
        Ok(0) => {}
        Ok(n) => reporter.notice(&format!(
            "{n} writes the last runner could not make at its stop are written now"
        )),
        Err(e) => reporter.notice(&format!(
            "what the last runner could not write at its stop is not written now ({e}): it is left there"
        )),
    }
}

/// The first block of run numbers of every job, reserved before any is given.
fn first_blocks(plan: &Plan, memory: &crate::store::Memory) -> Vec<crate::store::Op> {
    plan.jobs
        .iter()
        .map(|j| crate::store::Op::Reserve {
            job: j.name.clone(),
            upto: memory.last_runs.get(&j.name).copied().unwrap_or(0) + crate::engine::NUMBER_BLOCK,
        })
        .collect()
}

/// One man page for the whole tool: the top level by clap_mangen, then every command with its options (folded
/// in: there are no per-command pages), the exit status, the environment and the files.
fn man_page() -> std::io::Result<String> {
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
    let roff = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-");
    text.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        text.push_str(&format!(
            ".TP\n\\fBflowrun {}\\fR\n{}\n.RS\n",
            sub.get_name(),
            roff(&sub.get_about().map(|a| a.to_string()).unwrap_or_default())
        ));
        for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(l), Some(s)) => format!("-{s}, --{l}"),
                (Some(l), None) => format!("--{l}"),
                _ => arg.get_id().as_str().to_uppercase(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            text.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(&name), roff(&help)));
        }
        text.push_str(".RE\n");
    }
    text.push_str(&roff_sections());
    Ok(text)
}

fn roff_sections() -> String {
    [
        ".SH \"EXIT STATUS\"",
        "Running: 0 every run that ended succeeded (runs stopped at shutdown do not count); 1 a run failed for good or a message failed; 2 the workflow is invalid or unreadable, or the arguments are wrong (nothing started); 130 a second SIGINT forced the stop.",
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
        ".TP\n\\fISTATE\\fR/state.db, \\fISTATE\\fR/logs/\\fIJOB\\fR/\\fIRUN\\fR.log, \\fISTATE\\fR/runner.lock\nThe state: history, the last handled firing of each time trigger and the run counters (SQLite, WAL); each run's output; the pid of the runner holding the state.",
        "",
    ]
    .join("\n")
}

fn validate_files(files: &[std::path::PathBuf], format: Format, deny_warnings: bool) -> i32 {
    let now = Utc::now();
    let mut unreadable = false;
    let mut loaded: Vec<(String, Option<Source>, Validated)> = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match Source::read(file) {
            Ok(source) => {
                let validated = Validated {
                    diagnostics: crate::validate::check(&source, now),
                    plan: None,
                };
                loaded.push((name, Some(source), validated));
            }
            Err(e) => {
                unreadable = true;
                eprintln!("error: {}", crate::report::escape_controls(&e.to_string()));
                loaded.push((
                    name,
                    None,
                    Validated {
                        diagnostics: Vec::new(),
                        plan: None,
                    },
                ));
            }
        }
    }
    let (errors, warnings) = loaded.iter().fold((0, 0), |(e, w), (_, _, v)| {
        (e + v.errors(), w + v.warnings())
    });
    match format {
        Format::Json => {
            let reports: Vec<FileReport> = loaded
                .iter()
                .map(|(file, source, v)| FileReport {
                    file: file.clone(),
                    source: source.as_ref(),
                    diagnostics: &v.diagnostics,
                })
                .collect();
            crate::output::print_out(&render::json(&reports));
        }
        Format::Github => {
            for (file, source, v) in &loaded {
                crate::output::print_out(&render::github(&FileReport {
                    file: file.clone(),
                    source: source.as_ref(),
                    diagnostics: &v.diagnostics,
                }));
            }
        }
        Format::Human => {
            let color = crate::output::color_on_stderr();
            for (file, source, v) in &loaded {
                if let Some(source) = source {
                    eprint!("{}", render::human(source, &v.diagnostics, color));
                    if v.diagnostics.is_empty() {
                        eprintln!("{file}: ok");
                    }
                }
            }
            if errors + warnings > 0 {
                eprintln!("{errors} error(s), {warnings} warning(s)");
            }
        }
    }
    if unreadable {
        exit::INVALID
    } else if errors > 0 || (deny_warnings && warnings > 0) {
        exit::FAILED
    } else {
        exit::OK
    }
}

fn next(
    file: &Path,
    jobs: &[String],
    count: usize,
    from: Option<&str>,
    format: Mode,
) -> Result<i32, Error> {
    let plan = crate::load::load_plan(file)?;
    let from = match from {
        None => Utc::now(),
        Some(text) => match crate::values::parse_datetime(text) {
            Ok(dt) => dt.resolve(crate::values::system_zone()),
            Err(e) => return Err(Error::usage(format!("--from: {e}"))),
        },
    };
    for name in jobs {
        if plan.job_id(name).is_none() {
            let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(Error::Usage {
                message: format!("`{name}` is not a job of {}", file.display()),
                help: Some(crate::diagnostic::suggestion_help(name, &names, "job")),
            });
        }
    }
    let selected: Vec<usize> = (0..plan.jobs.len())
        .filter(|&j| plan.jobs[j].has_time_trigger())
        .filter(|&j| jobs.is_empty() || jobs.contains(&plan.jobs[j].name))
        .collect();
    let fmt = |t: &DateTime<Utc>| crate::values::format_instant(*t);
    match format {
        Mode::Json => {
            let mut map = serde_json::Map::new();
            for &j in &selected {
                let times: Vec<_> = plan.next_fires(j, from, count).iter().map(fmt).collect();
                map.insert(plan.jobs[j].name.clone(), times.into());
            }
            let mut text = serde_json::to_string_pretty(&map).expect("JSON values serialize");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Text => {
            let mut text = String::new();
            for &j in &selected {
                let job = &plan.jobs[j];
                let rules: Vec<String> = job
                    .triggers
                    .iter()
                    .filter_map(|t| match t {
                        Trigger::Time { rule, .. } => Some(rule.describe()),
                        _ => None,
                    })
                    .collect();
                text.push_str(&format!("{} ({})\n", job.name, rules.join(", ")));
                for t in plan.next_fires(j, from, count) {
                    text.push_str(&format!("  {}\n", fmt(&t)));
                }
            }
            if selected.is_empty() {
                text.push_str("no job has a time trigger (cron, interval or at)\n");
            }
            crate::output::print_out(&text);
        }
    }
    Ok(exit::OK)
}
