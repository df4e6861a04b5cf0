//! `flowrun validate FILE...`: every problem of every file, in the format asked for, and the exit code CI needs.

use chrono::Utc;

use crate::diagnostics::render::{self, FileReport, Format};
use crate::exit;
use crate::text::source::Source;
use crate::validate::Validated;

pub fn files(files: &[std::path::PathBuf], format: Format, deny_warnings: bool) -> i32 {
    let now = Utc::now();
    let mut unreadable = false;
    let mut loaded: Vec<(String, Option<Source>, Validated)> = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match Source::read(file) {
            Ok(source) => {
                let validated = Validated {
                    diagnostics: crate::validate::check(&source, now),
                    plan: None,
                };
                loaded.push((name, Some(source), validated));
            }
            Err(e) => {
                unreadable = true;
                eprintln!("error: {}", crate::output::escape_controls(&e.to_string()));
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
            crate::output::print_out(&render::json(&reports));
        }
        Format::Github => {
            for (file, source, v) in &loaded {
                crate::output::print_out(&render::github(&FileReport {
                    file: file.clone(),
                    source: source.as_ref(),
                    diagnostics: &v.diagnostics,
                }));
            }
        }
        Format::Human => {
            let color = crate::output::color_on_stderr();
            for (file, source, v) in &loaded {
                if let Some(source) = source {
                    eprint!("{}", render::human(source, &v.diagnostics, color));
                    if v.errors() + v.warnings() == 0 {
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
