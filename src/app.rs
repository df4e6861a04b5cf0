//! The commands: each reads its inputs, calls into the library and returns the exit code.

use chrono::{DateTime, SecondsFormat, Utc};
use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::cli::{Cli, Command, GraphFormat, TextOrJson};
use crate::exit;
use crate::plan::{Plan, Trigger};
use crate::render::{self, FileReport, Format};
use crate::source::Source;
use crate::validate::{validate, Validated};

pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Validate {
            files,
            format,
            deny_warnings,
        } => validate_files(&files, format, deny_warnings),
        Command::Schema => {
            print_out(&crate::document::json_schema());
            exit::OK
        }
        Command::Next {
            file,
            jobs,
            count,
            from,
            format,
        } => next(&file, &jobs, count, from.as_deref(), format),
        Command::Graph { file, format } => match load_plan(&file) {
            Ok(plan) => {
                print_out(&match format {
                    GraphFormat::Mermaid => crate::graph::mermaid(&plan),
                    GraphFormat::Dot => crate::graph::dot(&plan),
                });
                exit::OK
            }
            Err(code) => code,
        },
        Command::Run(args) => crate::runner::run_command(args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "flowrun", &mut out);
            print_out(&String::from_utf8_lossy(&out));
            exit::OK
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => {
                    print_out(&String::from_utf8_lossy(&out));
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::FAILED
                }
            }
        }
    }
}

/// Print to stdout; a closed stdout (`| head`) is a normal end, not a crash.
pub fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

fn color_on_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn validate_files(files: &[std::path::PathBuf], format: Format, deny_warnings: bool) -> i32 {
    let now = Utc::now();
    let mut unreadable = false;
    let mut loaded: Vec<(String, Option<Source>, Validated)> = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match Source::read(file) {
            Ok(source) => {
                let validated = validate(&source, now);
                loaded.push((name, Some(source), validated));
            }
            Err(e) => {
                unreadable = true;
                eprintln!("error: {e}");
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
            print_out(&render::json(&reports));
        }
        Format::Github => {
            for (file, source, v) in &loaded {
                print_out(&render::github(&FileReport {
                    file: file.clone(),
                    source: source.as_ref(),
                    diagnostics: &v.diagnostics,
                }));
            }
        }
        Format::Human => {
            let color = color_on_stderr();
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

/// Read and validate a workflow for a command that needs a plan; on problems print them and give the exit code.
pub fn load_plan(file: &Path) -> Result<Plan, i32> {
    load_plan_as(file, false)
}

/// As [`load_plan`]; with `json`, problems are `diagnostic` events on stderr (one JSON object a line), so a
/// `--log-format json` stream stays machine-readable from its first line.
pub fn load_plan_as(file: &Path, json: bool) -> Result<Plan, i32> {
    let source = Source::read(file).map_err(|e| {
        if json {
            eprintln!(
                "{}",
                serde_json::to_string(
                    &crate::event::Event::new("diagnostic").reason(e.to_string())
                )
                .unwrap_or_default()
            );
        } else {
            eprintln!("error: {e}");
        }
        exit::INVALID
    })?;
    let validated = validate(&source, Utc::now());
    if json {
        for d in &validated.diagnostics {
            let at = source.line_col(d.span.offset);
            let mut e = crate::event::Event::new("diagnostic");
            e.reason = Some(format!(
                "{} {}: {} ({}:{}:{})",
                d.severity().as_str(),
                d.code.as_str(),
                d.message,
                source.name(),
                at.line,
                at.column
            ));
            eprintln!("{}", serde_json::to_string(&e).unwrap_or_default());
        }
    } else if !validated.diagnostics.is_empty() {
        eprint!(
            "{}",
            render::human(&source, &validated.diagnostics, color_on_stderr())
        );
    }
    validated.plan.ok_or(exit::INVALID)
}

fn next(file: &Path, jobs: &[String], count: usize, from: Option<&str>, format: TextOrJson) -> i32 {
    let plan = match load_plan(file) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let from = match from {
        None => Utc::now(),
        Some(text) => match crate::values::parse_datetime(text) {
            Ok(dt) => dt.resolve(crate::values::system_zone()),
            Err(e) => {
                eprintln!("error: --from: {e}");
                return exit::INVALID;
            }
        },
    };
    for name in jobs {
        if plan.job_id(name).is_none() {
            let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            eprintln!(
                "error: `{name}` is not a job of {}\nhelp: {}",
                file.display(),
                crate::diagnostic::suggestion_help(name, &names, "job")
            );
            return exit::INVALID;
        }
    }
    let selected: Vec<usize> = (0..plan.jobs.len())
        .filter(|&j| plan.jobs[j].has_time_trigger())
        .filter(|&j| jobs.is_empty() || jobs.contains(&plan.jobs[j].name))
        .collect();
    let fmt = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    match format {
        TextOrJson::Json => {
            let mut map = serde_json::Map::new();
            for &j in &selected {
                let times: Vec<_> = plan.next_fires(j, from, count).iter().map(fmt).collect();
                map.insert(plan.jobs[j].name.clone(), times.into());
            }
            let mut text = serde_json::to_string_pretty(&map).expect("JSON values serialize");
            text.push('\n');
            print_out(&text);
        }
        TextOrJson::Text => {
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
            print_out(&text);
        }
    }
    exit::OK
}
