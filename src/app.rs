//! The commands, dispatched: each reads its inputs, calls into the library and returns its exit code or an
//! [`Error`], which is printed here, once.

use std::io::Write;

use crate::cli::{Cli, Command, GraphFormat};
use crate::error::Error;
use crate::event::Record;
use crate::exit;

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
        } => Ok(crate::commands::validate::files(
            &files,
            format,
            deny_warnings,
        )),
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
        } => crate::commands::next::next(&file, &jobs, count as usize, from.as_deref(), format),
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
        | Command::Pause { .. }
        | Command::Resume { .. }
        | Command::Reload { .. }
        | Command::Ui { .. }) => on_state(command),
        Command::Completions { shell } => {
            crate::output::print_out(&crate::commands::complete::script(shell));
            Ok(exit::OK)
        }
        Command::Man => {
            crate::output::print_out(
                &crate::commands::man::page().map_err(|e| Error::Output(e.to_string()))?,
            );
            Ok(exit::OK)
        }
    }
}

/// `flowrun __jobs`: the job names the completion scripts ask for (see [`crate::cli::JobsArgs`]).
pub fn jobs(args: crate::cli::JobsArgs) {
    crate::output::print_out(&crate::commands::complete::jobs(
        args.file.as_deref(),
        &args.words,
    ));
}

/// The commands on a workflow's state and its running runner: `status`, `history`, `logs`, `trigger`, `stop`,
/// `reload`, `ui`, `pause`, `resume`; with `--store`, the cluster's instead of this host's.
fn on_state(command: Command) -> Result<i32, Error> {
    match command {
        Command::Status {
            file,
            state,
            store,
            format,
        } => match store.url() {
            Some(url) => {
                crate::inspect::cluster_status(&file, &url, store.cluster.as_deref(), format)
            }
            None => crate::inspect::status(&file, state.dir.as_deref(), format),
        },
        command @ Command::History { .. } => history(command),
        Command::Logs {
            file,
            job,
            run,
            follow,
            state,
            store,
        } => match store.url() {
            Some(url) => {
                crate::inspect::cluster_logs(&file, &url, store.cluster.as_deref(), &job, run)
            }
            None => crate::inspect::logs(&file, &job, run, follow, state.dir.as_deref()),
        },
        Command::Trigger {
            file,
            job,
            wait,
            state,
            store,
        } => match store.url() {
            Some(url) => crate::control::commands::trigger_in_cluster(
                &file,
                &job,
                wait,
                &url,
                store.cluster.as_deref(),
            ),
            None => crate::control::commands::trigger(&file, &job, wait, state.dir.as_deref()),
        },
        command => on_runner(command),
    }
}

/// `history`, of this host's state or of the cluster's store.
fn history(command: Command) -> Result<i32, Error> {
    let Command::History {
        file,
        jobs,
        limit,
        since,
        failed,
        tries,
        state,
        store,
        format,
    } = command
    else {
        return Err(Error::Setup("not history".into()));
    };
    crate::inspect::history(
        &file,
        crate::inspect::HistoryArgs {
            jobs: &jobs,
            limit,
            since: since.as_deref(),
            failed,
            tries,
            state: state.dir.as_deref(),
            format,
            store: store.url(),
            cluster: store.cluster.as_deref(),
        },
    )
}

/// The commands that ask this host's running runner: `stop`, `reload`, `ui`, `pause`, `resume`.
fn on_runner(command: Command) -> Result<i32, Error> {
    match command {
        Command::Stop { file, job, state } => {
            crate::control::commands::stop(&file, job.as_deref(), state.dir.as_deref())
        }
        Command::Reload { file, state } => {
            crate::control::commands::reload(&file, state.dir.as_deref())
        }
        Command::Ui {
            file,
            port,
            open,
            state,
        } => crate::control::proxy::ui(&file, state.dir.as_deref(), port, open),
        Command::Pause {
            file,
            job,
            span,
            state,
        } => crate::control::commands::pause(&file, &job, span, state.dir.as_deref()),
        Command::Resume { file, job, state } => {
            crate::control::commands::resume(&file, &job, state.dir.as_deref())
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
