//! `flowrun validate`, `schema` and the examples, driven through the real binary.

mod common;

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn flowrun() -> Command {
    let mut cmd = Command::cargo_bin("flowrun").unwrap();
    cmd.env("XDG_STATE_HOME", common::state_home());
    cmd.env("NO_COLOR", "1").env("TZ", "UTC");
    cmd
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/invalid")
        .join(format!("{name}.yaml"))
}

fn json_report(file: &Path) -> Value {
    let out = flowrun()
        .args(["validate", "--format", "json"])
        .arg(file)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (code, line, column) of every diagnostic of a file.
fn positions(file: &Path) -> Vec<(String, u64, u64)> {
    common::diagnostics(file)
        .into_iter()
        .map(|(code, line, column, _)| (code, line, column))
        .collect()
}

/// Each code of SPEC §2.6, its fixture, and the exact place of the value at fault.
const CASES: &[(&str, u64, u64)] = &[
    ("syntax", 3, 17),
    ("unknown-key", 4, 5),
    ("missing-key", 2, 3),
    ("duplicate-key", 5, 5),
    ("invalid-value", 4, 14),
    ("invalid-cron", 4, 26),
    ("undeclared-channel", 9, 12),
    ("undeclared-executor", 6, 15),
    ("unknown-job", 6, 23),
    ("dependency-cycle", 4, 23),
    ("pipe-endpoints", 2, 3),
    ("no-reader", 2, 3),
    ("no-writer", 2, 3),
    ("unused-channel", 2, 3),
    ("conflicting-keys", 10, 14),
    ("starved-executor", 13, 12),
    ("past-time", 4, 20),
    ("invalid-probe", 4, 19),
    ("no-probe", 6, 23),
    ("all-must-fail", 6, 23),
    ("env-file-variable", 5, 38),
];

#[test]
fn every_code_is_reported_at_the_exact_place() {
    for (code, line, column) in CASES {
        let found = positions(&fixture(code));
        assert!(
            found.contains(&(code.to_string(), *line, *column)),
            "{code}: expected at {line}:{column}, found {found:?}"
        );
    }
}

#[test]
fn every_spec_code_has_a_fixture() {
    for code in flowrun::diagnostic::Code::ALL {
        assert!(
            CASES.iter().any(|(c, _, _)| *c == code.as_str()),
            "no fixture for {}",
            code.as_str()
        );
    }
}

#[test]
fn human_reports_match_snapshots() {
    for (code, _, _) in CASES {
        let file = format!("tests/fixtures/invalid/{code}.yaml");
        let out = flowrun()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["validate", &file])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stderr).unwrap();
        assert!(
            text.contains(&format!("{file}:")),
            "{code}: the report names file:line:col"
        );
        insta::assert_snapshot!(format!("human-{code}"), text);
    }
}

#[test]
fn all_problems_of_a_file_are_reported() {
    let found = positions(&fixture("many-problems"));
    // (`tasks` has no writer only because of the typo `stdout: task`: that warning follows from the error and
    // is not reported.)
    let expected = [
        ("invalid-value", 2, 22),
        ("unused-channel", 5, 3),
        ("invalid-value", 5, 18),
        ("undeclared-channel", 9, 13),
        ("invalid-value", 10, 14),
        ("missing-key", 11, 3),
        ("invalid-cron", 15, 29),
    ];
    let expected: Vec<(String, u64, u64)> = expected
        .iter()
        .map(|(c, l, k)| (c.to_string(), *l, *k))
        .collect();
    assert_eq!(found, expected);
    let report = json_report(&fixture("many-problems"));
    assert_eq!(report["errors"], 6);
    assert_eq!(report["warnings"], 1);
    let first = &report["files"][0]["diagnostics"][0];
    assert_eq!(first["end_line"], 2);
    assert_eq!(first["end_column"], 23);
    assert_eq!(first["severity"], "error");
    assert!(first["help"].as_str().unwrap().contains("1 to 100000"));
}

#[test]
fn exit_codes() {
    // Errors: 1. Warnings only: 0, or 1 under --deny-warnings. Unreadable: 2.
    flowrun()
        .arg("validate")
        .arg(fixture("unknown-key"))
        .assert()
        .code(1);
    flowrun()
        .arg("validate")
        .arg(fixture("unused-channel"))
        .assert()
        .code(0);
    flowrun()
        .args(["validate", "--deny-warnings"])
        .arg(fixture("unused-channel"))
        .assert()
        .code(1);
    flowrun()
        .args(["validate", "/nonexistent/flow.yaml"])
        .assert()
        .code(2);
    flowrun()
        .args(["validate", "--format", "xml"])
        .arg(fixture("unknown-key"))
        .assert()
        .code(2);
}

#[test]
fn several_files_in_one_run() {
    let report = {
        let out = flowrun()
            .args(["validate", "--format", "json"])
            .arg(fixture("unknown-key"))
            .arg(fixture("no-writer"))
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(report["files"].as_array().unwrap().len(), 2);
    assert_eq!(report["errors"], 1);
    assert_eq!(report["warnings"], 1);
}

#[test]
fn github_annotations() {
    let out = flowrun()
        .args(["validate", "--format", "github"])
        .arg(fixture("undeclared-executor"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("::error file="), "{text}");
    assert!(text.contains(",line=6,col=15,"), "{text}");
    assert!(
        text.contains("title=flowrun(undeclared-executor)::"),
        "{text}"
    );
    let out = flowrun()
        .args(["validate", "--format", "github"])
        .arg(fixture("no-writer"))
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("::warning file="));
}

#[test]
fn files_too_large_or_not_utf8_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        format!("# {}\njobs: {{}}\n", "x".repeat(5 * 1024 * 1024)),
    )
    .unwrap();
    let out = flowrun().arg("validate").arg(&big).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 MiB"));
    let latin = dir.path().join("latin.yaml");
    std::fs::write(&latin, b"jobs:\n  caf\xe9:\n    run: echo\n").unwrap();
    let out = flowrun().arg("validate").arg(&latin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
}

#[test]
fn an_alias_bomb_is_an_error_not_an_explosion() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        text.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    text.push_str("jobs: { x: { run: echo } }\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bomb.yaml");
    std::fs::write(&file, text).unwrap();
    let found = positions(&file);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "syntax");
}

#[test]
fn anchors_aliases_and_merge_keys_work() {
    let text = "\
base: &base
  timeout: 5m
  retry: { attempts: 2 }
jobs:
  a:
    <<: *base
    run: echo a
  b:
    <<: *base
    run: echo b
    timeout: 1m
";
    // `base` is not a key of the format: the merge source must live under a known key, so use defaults instead.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merge.yaml");
    std::fs::write(&file, text).unwrap();
    let found = positions(&file);
    assert_eq!(found, [("unknown-key".to_string(), 1, 1)]);
    let text = "\
defaults: &base
  timeout: 5m
jobs:
  a:
    <<: *base
    run: echo a
  b:
    <<: *base
    run: [echo, b]
    timeout: 1m
";
    std::fs::write(&file, text).unwrap();
    assert_eq!(positions(&file), []);
}

#[test]
fn examples_validate_without_any_diagnostic() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let mut count = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        flowrun()
            .args(["validate", "--deny-warnings"])
            .arg(&path)
            .assert()
            .success();
        count += 1;
    }
    assert!(count >= 6);
}

#[test]
fn schema_command_matches_the_committed_schema() {
    let out = flowrun().arg("schema").output().unwrap();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/workflow.schema.json"),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "schemas/workflow.schema.json is stale: run `cargo run -- schema > schemas/workflow.schema.json`"
    );
}

#[test]
fn examples_conform_to_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/workflow.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    for entry in std::fs::read_dir(root.join("workflows")).unwrap() {
        let path = entry.unwrap().path();
        let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    // And the schema rejects what validate rejects.
    let bad: Value = serde_json::json!({ "jobs": { "a": { "run": "x", "tigger": "start" } } });
    assert!(!validator.is_valid(&bad));
}

#[test]
fn an_endless_device_is_refused_not_read_for_ever() {
    let out = flowrun().args(["validate", "/dev/zero"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("over 4 MiB"));
}

/// The diagnostics of a YAML text: (code, line, column, message, help).
fn diagnose(yaml: &str) -> Vec<(String, u64, u64, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    json_report(&file)["files"][0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
                d["message"].as_str().unwrap().to_string(),
                d["help"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_tab_gets_a_hint_about_tabs() {
    let d = diagnose("jobs:\n  a:\n\trun: x\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "syntax");
    assert!(d[0].4.contains("does not allow tabs"), "{d:?}");
}

#[test]
fn a_job_key_indented_too_little_is_one_error_that_says_so() {
    let d = diagnose("jobs:\n  backup:\n    run: ./b.sh\n  trigger:\n    cron: \"0 3 * * *\"\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].0.as_str(), d[0].1, d[0].2), ("missing-key", 4, 3));
    assert!(d[0].4.contains("under job `backup`"), "{d:?}");
}

#[test]
fn a_typo_in_a_channel_name_is_one_error_without_cascading_warnings() {
    let d = diagnose("channels: { readings: {} }\njobs:\n  p: { run: x, stdout: reading }\n  c: { run: y, stdin: readings }\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, "undeclared-channel");
    assert!(d[0].4.contains("did you mean `readings`"), "{d:?}");
}

#[test]
fn cron_messages_are_in_our_words() {
    let d = diagnose("jobs:\n  j: { run: x, trigger: { cron: \"0 0 * * MONDAY\" } }\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "invalid-cron");
    assert!(
        !d[0].3.contains("CronPattern") && !d[0].3.contains("illegal character"),
        "{d:?}"
    );
    assert!(d[0].3.contains("`MONDAY`"), "{d:?}");
}

#[test]
fn control_characters_in_a_file_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        "jobs:\n  a: { run: x, \"\\e[2Jbad\\a\": 1, executor: \"\\e]0;title\\a\" }\n",
    )
    .unwrap();
    for format in ["human", "github", "json"] {
        let out = flowrun()
            .args(["validate", "--format", format])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !stream.iter().any(|&b| b == 0x1b || b == 0x07),
                "{format}: {}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}

/// The YAML blocks of the README that are whole workflows (they have `jobs:`).
fn readme_workflows() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string())
        .filter(|b| b.lines().any(|l| l.starts_with("jobs:")))
        .collect()
}

#[test]
fn every_workflow_in_the_readme_validates() {
    let blocks = readme_workflows();
    assert!(blocks.len() >= 5, "{} blocks", blocks.len());
    for block in blocks {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flow.yaml");
        std::fs::write(&file, &block).unwrap();
        let out = flowrun().arg("validate").arg(&file).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let block = readme_workflows()
        .into_iter()
        .find(|b| b.contains("readings"))
        .expect("the quick start");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, &block).unwrap();
    let out = flowrun()
        .arg(&file)
        .args(["--for", "1500ms", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("got reading 1: "), "{text}");
}

#[test]
fn file_names_with_control_characters_are_escaped_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x\u{1b}[31m,line=1::e.yaml");
    std::fs::copy(fixture("undeclared-channel"), &file).unwrap();
    let missing = dir.path().join("nope\u{1b}[2J.yaml");
    for args in [vec!["validate"], vec!["validate", "--format", "github"]] {
        for path in [&file, &missing] {
            let out = flowrun().args(&args).arg(path).output().unwrap();
            for stream in [&out.stdout, &out.stderr] {
                assert!(
                    !stream.contains(&0x1b),
                    "{args:?}: {}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }
}

#[test]
fn a_large_file_within_the_limit_is_read_and_several_documents_are_refused_plainly() {
    // Over 250,000 YAML nodes (the parser's default budget) but well under 4 MiB.
    let mut yaml = String::from("jobs:\n  j:\n    run: 'true'\n    env:\n");
    for i in 0..130_000 {
        yaml.push_str(&format!("      V{i}: {i}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = flowrun().arg("validate").arg(&file).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = diagnose("---\njobs: { a: { run: x } }\n---\njobs: { b: { run: y } }\n");
    assert_eq!(d.len(), 1);
    assert!(d[0].3.contains("one YAML document"), "{d:?}");
    assert!(!d[0].3.contains("from_str"), "{d:?}");
}

#[test]
fn probe_keys_and_values_are_checked_with_hints() {
    let d = diagnose("jobs:\n  web:\n    run: x\n    ready: { htp: \"http://localhost:80/\" }\n");
    assert_eq!(
        (d[0].0.as_str(), d[0].1, d[0].2),
        ("unknown-key", 4, 14),
        "{d:?}"
    );
    assert!(d[0].4.contains("did you mean `http`"), "{d:?}");
    let d = diagnose(
        "jobs:\n  web:\n    run: x\n    ready: { log: up, tcp: \"127.0.0.1:80\", interval: 0s }\n",
    );
    let codes: Vec<&str> = d.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(codes, ["invalid-probe", "invalid-value"], "{d:?}");
    assert!(d[0].3.contains("2 probes (log, tcp)"), "{d:?}");
    let d = diagnose(
        "jobs:\n  web:\n    run: x\n    ready: { http: \"http://[::1]:8080/health?full=1\" }\n  db:\n    run: x\n    ready: { tcp: \"[::1]:5432\" }\n  c:\n    run: x\n    trigger: { after: [web, db], status: ready }\n",
    );
    assert_eq!(d, [], "IPv6 addresses and query strings are fine");
    let d = diagnose("jobs:\n  web:\n    run: x\n    ready: { exec: [] }\n");
    assert_eq!(d[0].3, "`exec` is an empty list", "{d:?}");
    // `ready` in `defaults` gives every job a probe, so `status: ready` may name any of them.
    let d = diagnose(
        "defaults: { ready: { tcp: \"localhost:80\" } }\njobs:\n  web: { run: x }\n  c: { run: x, trigger: { after: web, status: ready } }\n",
    );
    assert_eq!(d, []);
}

#[test]
fn probe_addresses_that_could_never_work_are_refused() {
    for (probe, words) in [
        (r#"http: "http://u:p@127.0.0.1:80/""#, "user or password"),
        (r#"http: "http://127.0.0.1:/""#, "port is empty or 0"),
        (r#"http: "http://x:0/""#, "port is empty or 0"),
        (r#"tcp: "http://x:80""#, "takes no scheme"),
    ] {
        let yaml = format!(
            "jobs:\n  web:\n    run: x\n    ready: {{ {probe} }}\n  c:\n    run: x\n    trigger: {{ after: web, status: ready }}\n"
        );
        let d = diagnose(&yaml);
        // The bad probe, and no `no-probe` for the job that waits for it.
        assert_eq!(d.len(), 1, "{probe}: {d:?}");
        assert_eq!(d[0].0, "invalid-probe");
        assert!(d[0].3.contains(words), "{probe}: {d:?}");
    }
}

#[test]
fn probe_addresses_name_the_jobs_variables() {
    // `$PORT` and `${PORT}` from the job's `env` (or `defaults`): valid, and checked as the address they make.
    let d = diagnose(
        "defaults: { env: { HOST: 127.0.0.1 } }\njobs:\n  web:\n    run: x\n    env: { PORT: 8080 }\n    ready: { http: \"http://$HOST:$PORT/health\" }\n  db:\n    run: x\n    env: { PORT: \"5432\" }\n    ready: { tcp: \"${HOST}:${PORT}\" }\n",
    );
    assert_eq!(d, []);
    // A name the job's `env` does not set: an error at the name itself.
    let d = diagnose(
        "jobs:\n  web:\n    run: x\n    env: { PORT: 8080 }\n    ready: { http: \"http://127.0.0.1:$NOPE/\" }\n",
    );
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].0.as_str(), d[0].1, d[0].2),
        ("invalid-probe", 5, 38),
        "{d:?}"
    );
    assert!(
        d[0].3.contains("`$NOPE`") && d[0].3.contains("job `web`"),
        "{d:?}"
    );
    assert!(d[0].4.contains("env"), "{d:?}");
    let d = diagnose(
        "jobs:\n  web:\n    run: x\n    env: { PORT: 8080 }\n    ready: { tcp: \"127.0.0.1:${NOPE}\" }\n",
    );
    assert_eq!(
        (d[0].0.as_str(), d[0].1, d[0].2),
        ("invalid-probe", 5, 30),
        "{d:?}"
    );
    // Values that make no address, and a `${` that is no variable.
    let d = diagnose(
        "jobs:\n  web:\n    run: x\n    env: { PORT: abc }\n    ready: { http: \"http://127.0.0.1:$PORT/\" }\n",
    );
    assert_eq!(d[0].0, "invalid-probe", "{d:?}");
    assert!(d[0].3.contains("`http://127.0.0.1:abc/`"), "{d:?}");
    let d = diagnose("jobs:\n  web:\n    run: x\n    ready: { tcp: \"127.0.0.1:${PORT\" }\n");
    assert_eq!(
        (d[0].0.as_str(), d[0].1, d[0].2),
        ("invalid-probe", 4, 30),
        "{d:?}"
    );
    // From an env_file, which validation does not read: a hint, which fails nothing, not even --deny-warnings.
    let file = fixture("env-file-variable");
    let d = common::diagnostics(&file);
    assert_eq!(d.len(), 1, "{d:?}");
    let report = json_report(&file);
    assert_eq!(report["files"][0]["diagnostics"][0]["severity"], "hint");
    assert_eq!(
        (report["errors"].as_u64(), report["warnings"].as_u64()),
        (Some(0), Some(0))
    );
    flowrun()
        .args(["validate", "--deny-warnings"])
        .arg(&file)
        .assert()
        .success();
    let github = flowrun()
        .args(["validate", "--format", "github"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8(github.stdout)
        .unwrap()
        .starts_with("::notice file="));
}

#[test]
fn limits_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("limits.yaml");
    std::fs::write(
        &file,
        "jobs:\n  a:\n    run: x\n    limits: { nice: 30, memory: lots, cpus: 2 }\n",
    )
    .unwrap();
    let found = positions(&file);
    assert!(
        found.contains(&("invalid-value".to_string(), 4, 21)),
        "{found:?}"
    );
    assert!(
        found.contains(&("invalid-value".to_string(), 4, 33)),
        "{found:?}"
    );
    assert!(
        found.contains(&("unknown-key".to_string(), 4, 39)),
        "{found:?}"
    );
}

#[test]
fn a_cpu_limit_is_a_percentage_or_a_number_of_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.yaml");
    std::fs::write(
        &file,
        "jobs:\n  a: { run: x, limits: { cpu: 50% } }\n  b: { run: x, limits: { cpu: 1.5 } }\n  \
         c: { run: x, limits: { cpu: 250 % } }\n  d: { run: x, limits: { cpu: fast } }\n  \
         e: { run: x, limits: { cpu: 0% } }\n  f: { run: x, limits: { cpu: '-5%' } }\n",
    )
    .unwrap();
    let found = positions(&file);
    assert_eq!(
        found,
        [
            ("invalid-value".to_string(), 5, 31),
            ("invalid-value".to_string(), 6, 31),
            ("invalid-value".to_string(), 7, 31),
        ],
        "{found:?}"
    );
    let diagnostics = diagnose("jobs:\n  a: { run: x, limits: { cpu: fast } }\n");
    assert!(
        diagnostics[0].4.contains("a percentage of one CPU (`50%`"),
        "{diagnostics:?}"
    );
}
