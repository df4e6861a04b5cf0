#![no_main]
//! Any bytes: reading and validating must never panic, and every diagnostic must point inside the text.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = flowrun::source::Source::new("fuzz.yaml", text.to_string());
    let validated = flowrun::validate::validate(&source, chrono::Utc::now());
    for d in &validated.diagnostics {
        assert!(d.span.end() <= text.len());
    }
});
