//! The commands: each reads its inputs, calls into the library and returns its exit code or an [`Error`].

use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::Path;

use crate::cli::{Cli, Command, GraphFormat};
use crate::diagnostics::render::{self, FileReport, Format};
use crate::error::Error;
use crate::event::Record;
use crate::exit;
use crate::plan::Trigger;
use crate::report::Mode;
use crate::text::source::Source;
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
        Command::Run(args) => crate::runner::run(args),
        command @ (Command::Status { .. }
        | Command::History { .. }
        | Command::Logs { .. }
        | Command::Trigger { .. }
        | Command::Stop { .. }
        | Command::Reload { .. }) => on_state(command),
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

/// The commands on a workflow's state and its running runner: `status`, `history`, `logs`, `trigger`, `stop`,
/// `reload`.
fn on_state(command: Command) -> Result<i32, Error> {
    match command {
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
        // `main` gives only the commands above.
        _ => Err(Error::Setup("not a command on a state".into())),
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
            crate::output::escape_controls(&other.to_string())
        ),
    }
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
                eprintln!("error: {}", crate::output::escape_controls(&e.to_string()));
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
                help: Some(crate::diagnostics::suggestion_help(name, &names, "job")),
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
