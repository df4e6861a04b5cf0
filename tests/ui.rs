//! What people see: the live status area under a pseudo-terminal, the log directory, completions.

mod common;

use std::path::Path;
use std::process::Command;

fn bin() -> String {
    assert_cmd::cargo::cargo_bin("flowrun")
        .display()
        .to_string()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workflows")
        .join(name)
        .display()
        .to_string()
}

/// Run a command line under a pseudo-terminal (util-linux `script`), returning everything the terminal got.
fn under_pty(command: &str) -> Option<String> {
    let out = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("XDG_STATE_HOME", common::state_home())
        .env("TERM", "xterm")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_live_view_shows_jobs_and_channels_then_the_summary() {
    let Some(screen) = under_pty(&format!("{} {} --for 2500ms", bin(), example("queue.yaml")))
    else {
        eprintln!("`script` is not installed: skipping the pseudo-terminal test");
        return;
    };
    // The status area: a line per job and per channel, with message counts.
    assert!(screen.contains("producer"), "{screen}");
    assert!(screen.contains("readings  queue"), "{screen}");
    assert!(screen.contains("runs"), "{screen}");
    // Output scrolls above it, prefixed.
    assert!(screen.contains("consumer#1 | got reading 1"), "{screen}");
    // It ends with the summary table.
    let summary = screen.rfind("runs succeeded").expect("a summary");
    assert!(screen[summary..].contains("readings"), "{screen}");
}

#[test]
fn the_live_view_shows_which_services_are_ready() {
    let (_dir, file) = common::flow(
        "jobs:\n  web:\n    run: echo listening; sleep 60\n    ready: { log: listening }\n  db:\n    run: sleep 60\n    ready: { exec: 'false' }\n",
    );
    let Some(screen) = under_pty(&format!(
        "{} {} --progress always --for 1500ms",
        bin(),
        file.display()
    )) else {
        eprintln!("`script` is not installed: skipping the pseudo-terminal test");
        return;
    };
    // Some drawing of each job's line showed its state (the last ones may show the stop).
    let shown = |job: &str, state: &str| {
        screen
            .split(['\n', '\r'])
            .any(|l| l.contains(&format!("{job}  ")) && l.contains(state) && l.contains("runs"))
    };
    assert!(shown("web", "ready"), "{screen:?}");
    assert!(shown("db", "starting"), "{screen:?}");
}

#[test]
fn no_live_view_off_a_terminal_or_with_progress_never() {
    let out = common::cmd().arg(example("dag.yaml")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("\x1b["),
        "no escape codes off a terminal: {err:?}"
    );
    if let Some(screen) = under_pty(&format!(
        "{} {} --progress never",
        bin(),
        example("dag.yaml")
    )) {
        assert!(
            !screen.contains("\x1b[2K"),
            "no status area with --progress never: {screen:?}"
        );
    }
}

#[test]
fn log_dir_keeps_each_runs_output_with_header_and_footer() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::cmd()
        .arg(example("dag.yaml"))
        .arg("--log-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = std::fs::read_to_string(dir.path().join("publish/1.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].starts_with("# publish#1 scheduled 20"), "{log}");
    assert!(lines[0].ends_with(": echo \"publishing\""), "{log}");
    assert_eq!(lines[1], "publishing");
    assert!(lines[2].starts_with("# exited 0 after "), "{log}");
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = common::cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("validate"),
            "{shell}"
        );
    }
    let out = common::cmd().arg("man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH flowrun"));
}

#[test]
fn the_live_view_fits_the_terminal_and_keeps_ctrl_c_from_echoing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        "jobs:\n  a-job-with-a-rather-long-name-for-the-screen: { run: 'stty -a </dev/tty | grep -o -- \"-\\?echoctl\"; sleep 1', trigger: [start, { interval: 1h }] }\n",
    )
    .unwrap();
    let Some(screen) = under_pty(&format!(
        "stty cols 60 rows 20; {} {} --for 1500ms; echo AFTER; stty -a | grep -o -- '-\\?echoctl'",
        bin(),
        file.display()
    )) else {
        eprintln!("`script` is not installed: skipping the pseudo-terminal test");
        return;
    };
    // While the view is shown, `^C` is not echoed; afterwards the terminal is as it was.
    assert!(screen.contains("| -echoctl"), "{screen:?}");
    let after = &screen[screen.rfind("AFTER").expect("the shell went on")..];
    assert!(
        after.contains("echoctl") && !after.contains("-echoctl"),
        "{after:?}"
    );
    // Every status line fits in 60 columns (escape codes aside).
    for line in screen.split(['\n', '\r']) {
        let plain = console::strip_ansi_codes(line);
        if plain.contains("runs ") && !plain.contains("succeeded") {
            assert!(console::measure_text_width(&plain) <= 60, "{plain:?}");
        }
    }
}

#[test]
fn the_top_level_help_completion_and_man_page_know_the_run_options() {
    let help = common::cmd().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--for",
        "--dry-run",
        "--progress",
        "--log-format",
        "--log-dir",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    // `flowrun FILE --pro<TAB>`: the top level's own options include the run options.
    let bash = common::cmd()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout);
    let top = &bash[bash.find("flowrun)").unwrap()..];
    let top = &top[..top.find(";;").unwrap()];
    assert!(top.contains("--progress"), "{top}");
    let man = common::cmd().arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    for section in [
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
    ] {
        assert!(man.contains(section), "{section}");
    }
    assert!(
        !man.contains("flowrun-run(1)"),
        "no pages that do not exist"
    );
    assert_eq!(man.matches(".ie \\n(.g").count(), 1, "one roff preamble");
    assert!(man.contains("\\fBflowrun validate\\fR"));
}

/// The text `flowrun man` prints.
fn man_page() -> String {
    let out = common::cmd().arg("man").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_man_page_lists_every_option_of_every_command() {
    let man = man_page();
    let commands = [
        "run",
        "validate",
        "next",
        "status",
        "history",
        "logs",
        "trigger",
        "stop",
        "reload",
        "graph",
        "schema",
        "completions",
        "man",
    ];
    let mut checked = 0;
    for command in commands {
        let start = man
            .find(&format!(".TP\n\\fBflowrun {command}\\fR\n"))
            .unwrap_or_else(|| panic!("no `flowrun {command}` in the man page"));
        let section = &man[start..];
        let section = &section[..section.find(".RE\n").unwrap()];
        // What the command's own --help lists, the man page lists.
        let help = common::cmd().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        let longs: Vec<&str> = help
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').strip_prefix("--"))
            .filter(|l| {
                !l.is_empty()
                    && *l != "help"
                    && l.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            })
            .collect();
        for long in longs {
            let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(
                section.contains(&roff),
                "{command}: no --{long} in\n{section}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "the options were read from --help: {checked}");
    // Each `--format` with the values it takes.
    assert!(
        man.contains("\\fB\\-\\-format FORMAT\\fR\nhuman (a report with the source), json (one document), github (annotations) [possible values: human, json, github]"),
        "{man}"
    );
    assert_eq!(
        man.matches("\\fB\\-\\-format FORMAT\\fR").count(),
        5,
        "validate, next, status, history, graph"
    );
    assert!(
        !man.contains("__jobs"),
        "the completion helper is no command of the page"
    );
}

#[test]
fn the_man_page_describes_every_key_of_the_workflow_file() {
    let man = man_page();
    let start = man
        .find(".SH \"FILE FORMAT\"")
        .expect("a FILE FORMAT section");
    let section = &man[start..];
    let section = &section[..section[4..].find(".SH ").unwrap() + 4];
    // Every key the format has (from the JSON Schema the reader is generated with) is named in it.
    let schema = common::cmd().arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    let keys_of = |v: &serde_json::Value| -> Vec<String> {
        v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let mut keys = keys_of(&schema);
    for definition in [
        "JobSpec",
        "ChannelSpec",
        "ExecutorSpec",
        "CronTrigger",
        "IntervalTrigger",
        "AtTrigger",
        "AfterTrigger",
        "EachTrigger",
    ] {
        keys.extend(keys_of(&schema["definitions"][definition]));
    }
    assert!(keys.len() > 30, "{keys:?}");
    for key in keys {
        assert!(
            section.contains(&format!("\\fB{key}\\fR")),
            "no `{key}` in\n{section}"
        );
    }
    assert!(section.contains("\\fBstart\\fR"), "the start trigger");
    // A font escape written with one backslash too many prints as text.
    assert!(
        !man.contains("\\\\f"),
        "a doubled backslash before a font escape"
    );
}

#[test]
fn jobs_complete_where_a_job_goes() {
    let dag = example("dag.yaml");
    let jobs = |args: &[&str]| {
        let out = common::cmd().arg("__jobs").args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let all = "extract-a\nextract-b\njoin\npublish\ncleanup\n";
    assert_eq!(jobs(&[&dag]), all);
    for line in [
        vec!["trigger", &dag],
        vec!["stop", &dag],
        vec!["logs", "--state", "/tmp", &dag],
        vec!["history", &dag, "join"],
        vec!["next", &dag, "-n", "3"],
        vec![&dag, "--only"],
        vec![&dag, "--only", "join"],
        vec!["run", &dag, "--progress", "never", "--only"],
    ] {
        let mut args = vec!["--"];
        args.extend(line.iter().copied());
        assert_eq!(jobs(&args), all, "{line:?}");
    }
    for line in [
        vec!["trigger", &dag, "join"],
        vec!["logs", &dag, "join"],
        vec!["status", &dag],
        vec!["validate", &dag],
        vec![&dag],
        vec!["next", &dag, "--format"],
        vec!["trigger"],
    ] {
        let mut args = vec!["--"];
        args.extend(line.iter().copied());
        assert_eq!(jobs(&args), "", "no job goes after {line:?}");
    }
    // A file that is not valid has no names to offer, and says nothing.
    let (_dir, bad) = common::flow("jobs:\n  a: { tigger: start }\n");
    let out = common::cmd().arg("__jobs").arg(&bad).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

/// A completion script of the binary.
fn completion(shell: &str) -> String {
    let out = common::cmd().args(["completions", shell]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_bash_completion_offers_job_names() {
    let script = completion("bash");
    assert!(script.contains("flowrun __jobs"), "{script}");
    assert!(
        !script.contains("__jobs)"),
        "the helper is not offered as a command"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flowrun.bash"), &script).unwrap();
    // bash as it completes `flowrun trigger dag.yaml ex<TAB>` and `flowrun tri<TAB>`, with the binary on PATH.
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source flowrun.bash; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 _flowrun_with_jobs flowrun \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[*]}}\"; complete -p flowrun"
            ))
            .current_dir(dir.path())
            .env("PATH", format!("{}:{}", Path::new(&bin()).parent().unwrap().display(), std::env::var("PATH").unwrap()))
            .env("XDG_STATE_HOME", common::state_home())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dag = example("dag.yaml");
    let got = complete(&format!("flowrun trigger {dag} ex"));
    assert!(got.starts_with("extract-a extract-b\n"), "{got}");
    assert!(
        got.contains("-F _flowrun_with_jobs"),
        "ours is the function registered: {got}"
    );
    let got = complete("flowrun tri");
    assert!(
        got.starts_with("trigger\n"),
        "clap's completion goes on: {got}"
    );
    let got = complete(&format!("flowrun trigger {dag} --w"));
    assert!(got.starts_with("--wait\n"), "{got}");
}

#[test]
fn the_zsh_and_fish_completions_ask_for_job_names() {
    let zsh = completion("zsh");
    // clap_complete's top level is mended (the text it was written for is still what it prints): a command is the
    // first word, and the words after a FILE get the run's options.
    assert!(zsh.contains("\": :_flowrun_file_or_command\""), "{zsh}");
    assert!(!zsh.contains("$line[2]"), "{zsh}");
    assert!(zsh.contains("(*)\n_arguments"), "{zsh}");
    assert!(
        zsh.contains("_flowrun_options() {") && zsh.contains("flowrun __jobs --"),
        "{zsh}"
    );
    let fish = completion("fish");
    assert!(fish.contains("flowrun __jobs --"), "{fish}");
    assert!(
        !zsh.contains("'__jobs:") && !fish.contains("\"__jobs\""),
        "the helper is not offered as a command"
    );
    // Where the shells are installed, the scripts must at least parse.
    for (shell, script, check) in [("zsh", &zsh, "-n"), ("fish", &fish, "--no-execute")] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script");
        std::fs::write(&file, script).unwrap();
        match Command::new(shell).arg(check).arg(&file).output() {
            Ok(out) => assert!(
                out.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => eprintln!("skipped: {shell} is not installed"),
        }
    }
}

#[test]
fn the_dry_run_shows_jitter_and_misfire_grace_and_logs_keep_scripts_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        "jobs:\n  j:\n    run: |\n      echo one\n      echo two\n    trigger: [start, { interval: 1h, jitter: 5m }]\n    misfire_grace: 30s\n",
    )
    .unwrap();
    let out = common::cmd().arg(&file).arg("--dry-run").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("jitter up to 5m"), "{text}");
    assert!(text.contains("misfire_grace 30s"), "{text}");
    let logs = dir.path().join("logs");
    let out = common::cmd()
        .arg(&file)
        .args(["--for", "300ms", "--log-dir"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = std::fs::read_to_string(logs.join("j/1.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].starts_with("# j#1 scheduled ") && lines[0].ends_with(':'),
        "{log}"
    );
    assert_eq!(
        &lines[1..5],
        ["#   | echo one", "#   | echo two", "one", "two"],
        "{log}"
    );
}

#[test]
fn a_runner_in_the_background_of_a_terminal_is_not_stopped_by_its_live_view() {
    // With job control (`set -m`) a background job has its own process group: changing the terminal's settings
    // from it would stop it (SIGTTOU). The view leaves the settings alone there and the run ends normally.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        "jobs:\n  j: { run: 'echo hi', trigger: [start, { interval: 1h }] }\n",
    )
    .unwrap();
    let Some(screen) = under_pty(&format!(
        "set -m; timeout -s KILL 20 {} {} --progress always --for 500ms & wait $!; echo \"DONE $?\"",
        bin(),
        file.display()
    )) else {
        eprintln!("`script` is not installed: skipping the pseudo-terminal test");
        return;
    };
    assert!(screen.contains("DONE 0"), "{screen:?}");
}

#[test]
fn the_live_view_shows_what_a_durable_queue_keeps() {
    let (dir, file) = common::flow(
        "channels:\n  work: { durable: true }\njobs:\n  produce: { run: seq 40, stdout: work }\n  consume: { run: sleep 60, trigger: { each: work, batch: 10 } }\n",
    );
    let Some(screen) = under_pty(&format!(
        "{} {} --state {} --progress always --for 1500ms",
        bin(),
        file.display(),
        dir.path().join("state").display()
    )) else {
        eprintln!("`script` is not installed: skipping the pseudo-terminal test");
        return;
    };
    // All 40 are committed and none done (one batch is with a run that sleeps).
    assert!(
        screen
            .split(['\n', '\r'])
            .any(|l| l.contains("work") && l.contains("stored     40")),
        "{screen:?}"
    );
}
