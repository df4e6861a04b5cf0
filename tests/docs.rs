//! What the documentation promises and users copy: the README's first commands (a CI rule), its sqlite query run
//! against a state made by the real binary, and the pre-commit hook's file pattern.

mod common;

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

#[test]
fn the_readme_starts_with_the_run_and_test_commands() {
    let readme = read("README.md");
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(4)
        .collect();
    assert_eq!(lines[0], "# flowrun");
    assert_eq!(lines[1], "```sh");
    assert!(
        lines[2].starts_with("cargo run --release -- workflows/queue.yaml"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("cargo test ") || lines[3] == "cargo test",
        "{lines:?}"
    );
}

#[test]
fn the_readme_sends_users_to_its_own_sections_not_to_the_spec() {
    // Users have the README, not the SPEC the developers work from.
    let readme = read("README.md");
    assert!(!readme.contains("SPEC"), "the README cites the SPEC");
    // Every link to a section of the README names one that exists (GitHub's anchors: lower case, spaces to `-`,
    // punctuation other than `-` and `_` dropped).
    let anchors: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let mut links = 0;
    for part in readme.split("](#").skip(1) {
        let anchor = &part[..part.find(')').unwrap()];
        assert!(
            anchors.iter().any(|a| a == anchor),
            "no section for #{anchor}"
        );
        links += 1;
    }
    assert!(links > 20, "{links}");
}

/// The README's sqlite example, as a user pastes it: the SQL between the quotes after `STATE/state.db`.
fn readme_query() -> String {
    let readme = read("README.md");
    let at = readme
        .find("sqlite3 -header -column STATE/state.db")
        .expect("the sqlite example");
    let text = &readme[at..];
    let text = &text[..text.find("```").unwrap()];
    text[text.find('"').unwrap() + 1..text.rfind('"').unwrap()].to_string()
}

#[test]
fn the_readme_sqlite_query_counts_the_last_day_from_a_real_state() {
    let (dir, file) = common::flow(
        "jobs:\n  ok: { run: 'true' }\n  bad: { run: 'exit 3' }\n  late: { run: 'true', trigger: { at: \"2020-01-01T00:00:00Z\" } }\n",
    );
    let state = dir.path().join("state");
    let out = common::cmd()
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .args(["--progress", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "bad fails");
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    // Rows of other days, written as flowrun writes times: one from 25 hours ago, whose date may be the cutoff's
    // (where comparing with `datetime()`'s `YYYY-MM-DD HH:MM:SS` counted it), one from two days ago.
    for hours in [25, 48] {
        let at = (chrono::Utc::now() - chrono::Duration::hours(hours))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        db.execute(
            "INSERT INTO runs (job, run, outcome, scheduled, started, ended) VALUES ('ok', ?1, 'succeeded', ?2, ?2, ?2)",
            rusqlite::params![1000 + hours, at],
        )
        .unwrap();
    }
    let mut rows: Vec<(String, String, i64)> = db
        .prepare(&readme_query())
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    let expected = [
        ("bad", "failed", 1),
        ("late", "missed", 1),
        ("ok", "succeeded", 1),
    ]
    .map(|(j, o, n)| (j.to_string(), o.to_string(), n));
    assert_eq!(rows, expected);
}

/// A hook's `files` and `exclude` patterns as pre-commit reads them (Python's `re.search`, which the regex crate's
/// `is_match` agrees with for these patterns).
struct Hook {
    files: regex::Regex,
    exclude: regex::Regex,
}

impl Hook {
    fn from(hook: &serde_json::Value) -> Hook {
        let pattern = |key: &str| regex::Regex::new(hook[key].as_str().unwrap()).unwrap();
        Hook {
            files: pattern("files"),
            exclude: pattern("exclude"),
        }
    }
    fn checks(&self, path: &str) -> bool {
        self.files.is_match(path) && !self.exclude.is_match(path)
    }
}

#[test]
fn the_pre_commit_hook_checks_workflows_and_leaves_other_yaml_alone() {
    let hooks: serde_json::Value = serde_saphyr::from_str(&read(".pre-commit-hooks.yaml")).unwrap();
    let hook = Hook::from(&hooks[0]);
    // The README's local hook is the same hook.
    let readme = read("README.md");
    let local = readme
        .split("```yaml\n")
        .map(|b| &b[..b.find("```").unwrap_or(b.len())])
        .find(|b| b.contains("repo: local"))
        .expect("the README's local hook");
    let local: serde_json::Value = serde_saphyr::from_str(local).unwrap();
    let local = &local["repos"][0]["hooks"][0];
    assert_eq!(local["files"], hooks[0]["files"]);
    assert_eq!(local["exclude"], hooks[0]["exclude"]);

    for path in [
        "workflows/queue.yaml",
        "workflows/team/nightly.yml",
        "deploy/workflows/nightly.yaml",
        "flows/backup.yaml",
        "ops/flow/report.yml",
        "workflow/a.yaml",
        "backup.flow.yaml",
        "deploy/backup.flow.yml",
        "etc/sensor.flowrun.yaml",
    ] {
        assert!(hook.checks(path), "{path} is a workflow");
    }
    for path in [
        "docker-compose.yml",
        "deploy/docker-compose.yaml",
        ".github/workflows/ci.yml",
        ".gitlab-ci.yml",
        "config.yaml",
        "workflows.yaml",
        "myworkflows/a.yaml",
        "overflows/a.yaml",
        "workflows/README.md",
        "k8s/deployment.yaml",
        "backup.flow.yaml.orig",
    ] {
        assert!(!hook.checks(path), "{path} is not a workflow");
    }
    // Every example of this repository is checked by it.
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")).unwrap()
    {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            assert!(hook.checks(&format!("workflows/{name}")), "{name}");
        }
    }
}
