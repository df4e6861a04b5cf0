//! `flowrun next`, `graph` and `--dry-run` through the real binary.

mod common;

use assert_cmd::Command;
use serde_json::Value;

fn flowrun() -> Command {
    let mut cmd = Command::cargo_bin("flowrun").unwrap();
    cmd.env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .env("XDG_STATE_HOME", common::state_home());
    cmd
}

fn write(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    (dir, file)
}

const FLOW: &str = "
jobs:
  backup:
    run: echo backup
    trigger: { cron: \"30 2 * * *\", timezone: Europe/Berlin }
  poll:
    run: echo poll
    trigger: [{ interval: 90s }, { at: \"2026-03-29T12:00:00Z\" }]
  hello:
    run: echo hello
";

#[test]
fn next_prints_dst_aware_times_as_json() {
    let (_d, file) = write(FLOW);
    let out = flowrun()
        .args(["next"])
        .arg(&file)
        .args([
            "backup",
            "-n",
            "3",
            "--from",
            "2026-03-28T12:00:00Z",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // 02:30 does not exist in Berlin on 29 March 2026: it fires at 03:00 CEST (01:00 UTC). Times carry the
    // trigger's offset (the wall time it was written for), one hour more once summer time began.
    assert_eq!(
        v,
        serde_json::json!({ "backup": ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"] })
    );
}

#[test]
fn next_merges_a_jobs_triggers_in_time_order() {
    let (_d, file) = write(FLOW);
    let out = flowrun()
        .arg("next")
        .arg(&file)
        .args([
            "poll",
            "-n",
            "4",
            "--from",
            "2026-03-29T11:57:00Z",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The interval grid from --from (11:57:00 + 90 s steps) and the `at` time merged; the `at` time coincides
    // with a grid point (12:00:00) and fires once.
    assert_eq!(
        v["poll"],
        serde_json::json!([
            "2026-03-29T11:58:30Z",
            "2026-03-29T12:00:00Z",
            "2026-03-29T12:01:30Z",
            "2026-03-29T12:03:00Z"
        ])
    );
}

#[test]
fn next_text_lists_every_time_triggered_job() {
    let (_d, file) = write(FLOW);
    let out = flowrun()
        .arg("next")
        .arg(&file)
        .args(["-n", "1", "--from", "2026-01-01T00:00:00Z"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "backup (cron `30 2 * * *` (Europe/Berlin))\n  2026-01-01 02:30:00 +01:00 (Europe/Berlin)\n"
        ),
        "{text}"
    );
    assert!(text.contains("poll ("), "{text}");
    assert!(
        !text.contains("hello"),
        "jobs without a time trigger are not listed"
    );
}

#[test]
fn next_rejects_an_unknown_job_with_a_hint() {
    let (_d, file) = write(FLOW);
    let out = flowrun()
        .arg("next")
        .arg(&file)
        .arg("bakup")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `backup`?"));
}

#[test]
fn next_refuses_a_count_out_of_range_rather_than_reserving_it() {
    let (_d, file) = write(FLOW);
    for n in ["0", "100001", "99999999999"] {
        let out = flowrun()
            .arg("next")
            .arg(&file)
            .args(["-n", n])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "-n {n}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("1..=100000"),
            "{out:?}"
        );
    }
    // An `at` has one instant, however many are asked for.
    let (_d, file) = write("jobs:\n  once: { run: echo, trigger: { at: \"2030-01-01 00:00\" } }\n");
    let out = flowrun()
        .arg("next")
        .arg(&file)
        .args(["-n", "100000", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn graph_renders_jobs_channels_and_links() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (example, format) in [("workqueue.yaml", "mermaid"), ("dag.yaml", "dot")] {
        let out = flowrun()
            .current_dir(root)
            .args(["graph", &format!("workflows/{example}"), "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success());
        insta::assert_snapshot!(
            format!("graph-{example}-{format}"),
            String::from_utf8(out.stdout).unwrap()
        );
    }
}

#[test]
fn dry_run_prints_the_plan_and_starts_nothing() {
    let (dir, file) = write("jobs:\n  touch: { run: touch created, trigger: { interval: 1h } }\n");
    let out = flowrun().arg(&file).arg("--dry-run").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("touch: touch created"), "{text}");
    assert!(text.contains("trigger: every 1h"), "{text}");
    assert!(text.contains("next: "), "{text}");
    assert!(!dir.path().join("created").exists());
}

#[test]
fn next_and_the_dry_run_show_each_triggers_times_in_its_zone_with_the_offset() {
    // A cron in Berlin, an interval in Tokyo, and an `at` without a zone (the system's, here TZ=America/New_York).
    let (_d, file) = write(
        "jobs:
  backup:
    run: 'true'
    trigger: { cron: \"30 12 * * *\", timezone: Europe/Berlin }
  poll:
    run: 'true'
    trigger:
      - { interval: 12h, start: \"2026-12-01 00:00\", timezone: Asia/Tokyo }
      - { at: \"2026-12-24 18:00\" }
",
    );
    let out = flowrun()
        .env("TZ", "America/New_York")
        .arg("next")
        .arg(&file)
        .args(["-n", "2", "--from", "2026-12-24T22:00:00Z"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "  2026-12-25 12:30:00 +01:00 (Europe/Berlin)\n  2026-12-26 12:30:00 +01:00 (Europe/Berlin)\n"
        ),
        "{text}"
    );
    // 18:00 in New York is 23:00 UTC, between Tokyo's noon (03:00 UTC) and midnight (15:00 UTC).
    assert!(
        text.contains(
            "  2026-12-24 18:00:00 -05:00 (America/New_York)\n  2026-12-25 12:00:00 +09:00 (Asia/Tokyo)\n"
        ),
        "{text}"
    );
    let json = flowrun()
        .env("TZ", "America/New_York")
        .arg("next")
        .arg(&file)
        .args([
            "-n",
            "2",
            "--from",
            "2026-12-24T22:00:00Z",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v["poll"],
        serde_json::json!(["2026-12-24T18:00:00-05:00", "2026-12-25T12:00:00+09:00"])
    );
    // Each is the instant it names.
    for t in v["poll"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["backup"].as_array().unwrap())
    {
        chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
    }
    let dry = flowrun()
        .env("TZ", "America/New_York")
        .arg(&file)
        .arg("--dry-run")
        .output()
        .unwrap();
    let text = String::from_utf8(dry.stdout).unwrap();
    let next = regex::Regex::new(
        r"next: \d{4}-\d\d-\d\d 12:30:00 \+0[12]:00, \d{4}-\d\d-\d\d 12:30:00 \+0[12]:00, \d{4}-\d\d-\d\d 12:30:00 \+0[12]:00 \(Europe/Berlin\)\n",
    )
    .unwrap();
    assert!(next.is_match(&text), "{text}");
}

fn run_json(file: &std::path::Path) -> Vec<Value> {
    let out = flowrun()
        .arg(file)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::events(&out.stderr)
}

#[test]
fn an_at_time_fires_once_when_due_and_a_past_one_only_within_the_grace() {
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let just_past = (chrono::Utc::now() - chrono::Duration::milliseconds(200)).to_rfc3339();
    let (_d, file) = write(&format!(
        "jobs:
  soon: {{ run: echo soon, trigger: {{ at: \"{soon}\" }}, misfire_grace: 1m }}
  late-ok: {{ run: echo late, trigger: {{ at: \"{just_past}\" }}, misfire_grace: 1m }}
  too-late: {{ run: echo never, trigger: {{ at: \"2020-01-01T00:00:00Z\" }} }}
"
    ));
    let ev = run_json(&file);
    let started: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "run.start")
        .map(|e| e["job"].as_str().unwrap())
        .collect();
    assert!(
        started.contains(&"soon") && started.contains(&"late-ok"),
        "{started:?}"
    );
    assert!(!started.contains(&"too-late"));
    // Beyond its grace it is not silently dropped: missed, once.
    let missed: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "run.missed" && e["job"] == "too-late")
        .collect();
    assert_eq!(missed.len(), 1, "{ev:?}");
    assert_eq!(missed[0]["scheduled"], "2020-01-01T00:00:00.000000Z");
    let soon_start = ev
        .iter()
        .find(|e| e["event"] == "run.start" && e["job"] == "soon")
        .unwrap();
    // Started at (not before) its instant, and promptly.
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(soon_start["scheduled"].as_str().unwrap()).unwrap();
    let ts = chrono::DateTime::parse_from_rfc3339(soon_start["ts"].as_str().unwrap()).unwrap();
    assert!(ts >= scheduled);
    assert!(soon_start["lateness_us"].as_i64().unwrap() >= 0);
}

#[test]
fn interval_with_end_runs_a_bounded_number_of_times() {
    // A second ahead, so even a slow start of the binary does not pass the first grid point.
    let start = chrono::Utc::now() + chrono::Duration::milliseconds(1000);
    let end = start + chrono::Duration::milliseconds(450);
    let (_d, file) = write(&format!(
        "jobs:\n  tick: {{ run: [/bin/true], trigger: {{ interval: 100ms, start: \"{}\", end: \"{}\" }}, max_instances: 5 }}\n",
        start.to_rfc3339(),
        end.to_rfc3339()
    ));
    let ev = run_json(&file);
    let runs = ev.iter().filter(|e| e["event"] == "run.start").count();
    // start, +100, +200, +300, +400 ms: five firings on the grid, none after `end`; the workflow then ends.
    assert_eq!(runs, 5);
}

fn next_json(yaml: &str, args: &[&str], tz: &str) -> Value {
    let (_d, file) = write(yaml);
    let out = flowrun()
        .env("TZ", tz)
        .arg("next")
        .arg(&file)
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn midnight_is_a_macro() {
    let v = next_json(
        "jobs:\n  j: { run: 'true', trigger: { cron: '@midnight', timezone: UTC } }\n",
        &["-n", "2", "--from", "2026-01-01T10:00:00Z"],
        "UTC",
    );
    assert_eq!(
        v["j"],
        serde_json::json!(["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"])
    );
}

#[test]
fn sunday_to_sunday_fires_on_sundays_only() {
    let v = next_json(
        "jobs:\n  j: { run: 'true', trigger: { cron: '0 12 * * SUN-SUN', timezone: UTC } }\n",
        &["-n", "2", "--from", "2026-11-23T00:00:00Z"],
        "UTC",
    );
    assert_eq!(
        v["j"],
        serde_json::json!(["2026-11-29T12:00:00Z", "2026-12-06T12:00:00Z"])
    );
}

#[test]
fn the_tz_variable_is_the_default_zone_of_triggers_and_of_from() {
    for tz in ["Europe/Berlin", ":Europe/Berlin"] {
        let v = next_json(
            "jobs:\n  j: { run: 'true', trigger: { cron: '0 12 * * *' } }\n",
            &["-n", "1", "--from", "2026-01-01T00:00:00"],
            tz,
        );
        assert_eq!(
            v["j"],
            serde_json::json!(["2026-01-01T12:00:00+01:00"]),
            "TZ={tz}"
        );
    }
}

#[test]
fn sub_second_intervals_print_their_fractions() {
    let v = next_json(
        "jobs:\n  j: { run: 'true', trigger: { interval: 250ms, start: '2026-01-01T00:00:00Z' } }\n",
        &["-n", "3", "--from", "2026-01-01T00:00:00.1Z"],
        "UTC",
    );
    assert_eq!(
        v["j"],
        serde_json::json!([
            "2026-01-01T00:00:00.250Z",
            "2026-01-01T00:00:00.500Z",
            "2026-01-01T00:00:00.750Z"
        ])
    );
}

#[test]
fn cron_expressions_that_cannot_be_right_are_invalid_cron_at_the_field() {
    for (expr, column) in [
        ("MON * * * *", 39),
        ("0 0 * MON *", 45),
        ("0 0 * * JAN", 47),
        ("0 0 30 2 *", 43),
    ] {
        let (_d, file) = write(&format!(
            "jobs:\n  j: {{ run: 'true', trigger: {{ cron: \"{expr}\" }} }}\n"
        ));
        let out = flowrun()
            .args(["validate", "--format", "json"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{expr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &v["files"][0]["diagnostics"][0];
        assert_eq!(d["code"], "invalid-cron", "{expr}");
        assert_eq!(
            (d["line"].as_u64(), d["column"].as_u64()),
            (Some(2), Some(column)),
            "{expr}: {d}"
        );
    }
}

/// A grammar check of the Mermaid `flowchart` subset `graph` writes (no Mermaid parser can be installed here
/// without a browser): a header, node lines with quoted labels, edge lines with quoted labels.
#[test]
fn mermaid_output_of_every_example_follows_the_grammar() {
    let node = |l: &str| {
        let rest = l.strip_prefix("  j").and_then(|r| r.split_once("[\""));
        matches!(rest, Some((id, label)) if id.chars().all(|c| c.is_ascii_digit())
            && label.ends_with("\"]") && !label[..label.len() - 2].contains('"'))
    };
    let edge = |l: &str| {
        let parts: Vec<&str> = l.trim().split(' ').collect();
        let is_id = |s: &str| {
            s.strip_prefix('j')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        };
        match parts.as_slice() {
            [from, arrow, to] => {
                let label = arrow
                    .strip_prefix("-->|")
                    .or_else(|| arrow.strip_prefix("-.->|"))
                    .and_then(|a| a.strip_suffix('|'));
                is_id(from)
                    && is_id(to)
                    && label.is_some_and(|s| {
                        s.len() >= 2
                            && s.starts_with('"')
                            && s.ends_with('"')
                            && !s[1..s.len() - 1].contains('"')
                    })
            }
            _ => false,
        }
    };
    for entry in std::fs::read_dir("workflows").unwrap() {
        let path = entry.unwrap().path();
        let out = flowrun().arg("graph").arg(&path).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("flowchart LR"), "{}", path.display());
        for l in lines {
            // Labels with spaces are quoted, so an edge line has exactly three space-separated parts only when
            // its label has none; check the quoted form by joining the label back.
            let joined = match l.find("|\"") {
                Some(i) => {
                    let end = l[i + 2..]
                        .find("\"|")
                        .map(|e| i + 2 + e + 2)
                        .unwrap_or(l.len());
                    format!("{}{}{}", &l[..i], l[i..end].replace(' ', "_"), &l[end..])
                }
                None => l.to_string(),
            };
            assert!(
                node(l) || edge(&joined),
                "{}: not Mermaid: {l:?}",
                path.display()
            );
        }
    }
}

/// Every example's Mermaid graph through the real Mermaid parser, when `.ci/run` could install it (node, npm).
#[test]
fn mermaid_output_of_every_example_parses_with_mermaid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mermaid");
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !node_ok || !dir.join("node_modules/mermaid").exists() {
        eprintln!("node or the mermaid package is not installed (.ci/run installs it): skipping the parser check");
        return;
    }
    std::fs::copy("tests/mermaid/check.mjs", dir.join("check.mjs")).unwrap();
    for entry in std::fs::read_dir("workflows").unwrap() {
        let path = entry.unwrap().path();
        let out = flowrun().arg("graph").arg(&path).output().unwrap();
        let graph = dir.join(format!(
            "{}.mmd",
            path.file_stem().unwrap().to_string_lossy()
        ));
        std::fs::write(&graph, &out.stdout).unwrap();
        let parsed = std::process::Command::new("node")
            .arg(dir.join("check.mjs"))
            .arg(&graph)
            .current_dir(&dir)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&parsed.stdout);
        assert_eq!(
            said.trim(),
            "ok",
            "{}: {said}{}",
            path.display(),
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
}
