//! Properties of validation over generated documents: valid ones pass clean; mangled ones never panic and every
//! diagnostic points inside the file.

use chrono::{TimeZone, Utc};
use flowrun::source::Source;
use flowrun::validate::validate;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Wire {
    Queue { each: bool, batch: u8 },
    Pipe,
    Broadcast,
}

#[derive(Debug, Clone)]
enum Time {
    Interval(u8, &'static str),
    Cron(u8, u8),
    At(u8),
}

fn wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        (any::<bool>(), 1u8..5).prop_map(|(each, batch)| Wire::Queue { each, batch }),
        Just(Wire::Pipe),
        Just(Wire::Broadcast),
    ]
}

fn time() -> impl Strategy<Value = Time> {
    prop_oneof![
        (
            1u8..90,
            prop::sample::select(vec!["ms", "s", "m", "h", "d"])
        )
            .prop_map(|(n, u)| Time::Interval(n, u)),
        (0u8..60, 1u8..12).prop_map(|(m, h)| Time::Cron(m, h)),
        (0u8..28).prop_map(Time::At),
    ]
}

/// A document with `wires` writer/reader pairs and `extra` standalone jobs, some linked by `after`.
fn document(wires: Vec<Wire>, extra: Vec<(Option<Time>, Option<usize>)>) -> String {
    let mut text = String::from("version: 1\nexecutors:\n  pool: { max_workers: 3 }\n");
    if !wires.is_empty() {
        text.push_str("channels:\n");
        for (i, w) in wires.iter().enumerate() {
            let kind = match w {
                Wire::Queue { .. } => "queue",
                Wire::Pipe => "pipe",
                Wire::Broadcast => "broadcast",
            };
            text.push_str(&format!(
                "  c{i}: {{ kind: {kind}, capacity: {} }}\n",
                10 + i
            ));
        }
    }
    text.push_str("defaults:\n  timeout: 1m30s\n  stop_grace: 250ms\njobs:\n");
    for (i, w) in wires.iter().enumerate() {
        text.push_str(&format!(
            "  w{i}:\n    run: [seq, \"{}\"]\n    stdout: c{i}\n",
            i + 1
        ));
        match w {
            Wire::Queue { each: true, batch } => text.push_str(&format!(
                "  r{i}:\n    run: cat\n    trigger: {{ each: c{i}, batch: {batch} }}\n    executor: pool\n    retry: {{ attempts: 2, backoff: 10ms }}\n"
            )),
            _ => text.push_str(&format!("  r{i}:\n    run: \"wc -l\"\n    stdin: c{i}\n    restart: on-failure\n")),
        }
    }
    for (i, (t, after)) in extra.iter().enumerate() {
        text.push_str(&format!(
            "  x{i}:\n    run: echo {i}\n    env: {{ N: {i}, FLAG: true }}\n"
        ));
        let trigger = match (t, after.filter(|&a| a < i)) {
            (_, Some(a)) => format!("{{ after: x{a}, status: any }}"),
            (Some(Time::Interval(n, u)), None) => format!("[start, {{ interval: {n}{u} }}]"),
            (Some(Time::Cron(m, h)), None) => {
                format!("{{ cron: \"{m} */{h} * * MON-FRI\", timezone: Europe/Berlin }}")
            }
            (Some(Time::At(d)), None) => format!(
                "{{ at: \"2031-01-{:02} 10:00\", timezone: America/New_York }}",
                d + 1
            ),
            (None, None) => "start".to_string(),
        };
        text.push_str(&format!("    trigger: {trigger}\n"));
    }
    text
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap()
}

/// 200 cases in CI; `FLOWRUN_FUZZ_CASES=1000000` for a long hostile-input run by hand.
fn cases() -> u32 {
    std::env::var("FLOWRUN_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn valid_documents_have_no_diagnostics(
        wires in prop::collection::vec(wire(), 0..5),
        extra in prop::collection::vec((prop::option::of(time()), prop::option::of(0usize..6)), 0..6),
    ) {
        prop_assume!(!wires.is_empty() || !extra.is_empty());
        let text = document(wires.clone(), extra.clone());
        let source = Source::new("gen.yaml", text.clone());
        let v = validate(&source, now());
        prop_assert!(v.diagnostics.is_empty(), "{text}\n{:?}", v.diagnostics);
        let plan = v.plan.expect("a plan for a valid document");
        prop_assert_eq!(plan.jobs.len(), wires.len() * 2 + extra.len());
        prop_assert_eq!(plan.channels.len(), wires.len());
    }

    #[test]
    fn mangled_documents_never_panic_and_point_inside_the_file(
        wires in prop::collection::vec(wire(), 1..4),
        cut in 0usize..2000,
        edits in prop::collection::vec((0usize..2000, prop::sample::select(vec![":", " ", "\n", "-", "[", "{", "*", "&a ", "x", "\"", "<<: ", "!!str "])), 0..4),
    ) {
        let mut text = document(wires, vec![(None, None)]);
        for (at, insert) in edits {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, insert);
        }
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut.max(text.len() / 2));
        let source = Source::new("mangled.yaml", text.clone());
        let v = validate(&source, now());
        for d in &v.diagnostics {
            prop_assert!(d.span.end() <= text.len(), "{d:?} outside a file of {} bytes", text.len());
            prop_assert!(!d.message.is_empty());
        }
        prop_assert_eq!(v.plan.is_some(), v.errors() == 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Arbitrary text built from YAML's own punctuation and the format's words: never a panic, spans inside.
    #[test]
    fn arbitrary_text_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
        "jobs", "channels", "executors", "defaults", "run", "trigger", "each", "after", "cron", "interval", "at",
        "stdin", "stdout", "kind", "pipe", "queue", "broadcast", "start", "5s", "\"*/5 * * * *\"", "Europe/Berlin",
        ":", ": ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "<<: ", "!!map ", "'", "\"", "#", "|", ">",
        "~", "null", "1", "-1", "1e9", "é", "\t", "---\n", "...\n", "? ",
    ]), 0..80)) {
        let text: String = parts.concat();
        let source = Source::new("arbitrary.yaml", text.clone());
        let v = validate(&source, now());
        for d in &v.diagnostics {
            prop_assert!(d.span.end() <= text.len());
        }
    }
}
