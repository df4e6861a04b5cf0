//! What people see: the live status area under a pseudo-terminal, the log directory, completions.

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
fn no_live_view_off_a_terminal_or_with_progress_never() {
    let out = Command::new(bin())
        .arg(example("dag.yaml"))
        .output()
        .unwrap();
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
    let out = Command::new(bin())
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
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("validate"),
            "{shell}"
        );
    }
    let out = Command::new(bin()).arg("man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH flowrun"));
}
