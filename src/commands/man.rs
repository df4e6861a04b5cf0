//! `flowrun man`: one man page for the whole tool.

use crate::cli::Cli;

/// One man page for the whole tool: the top level by clap_mangen, then every command with its options (folded
/// in: there are no per-command pages), the exit status, the environment and the files.
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
