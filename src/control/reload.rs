//! Reload from the API (`POST /api/v1/reload`, `flowrun reload FILE`) and from `--watch`: the file is read and
//! validated off the dispatcher (a blocking task); with errors the old plan goes on and the diagnostics are
//! answered and reported (`reload.rejected`); otherwise the engine applies the new plan.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::plan::Plan;

enum Checked {
    Valid(Box<Plan>),
    Invalid {
        errors: usize,
        summary: String,
        report: String,
    },
}

/// Read and validate the file again (no colour: the report goes into JSON and the event log); under `--only`,
/// the new plan keeps to those jobs.
fn check(file: &Path, only: &[String]) -> Checked {
    let source = match crate::text::source::Source::read(file) {
        Ok(s) => s,
        Err(e) => {
            return Checked::Invalid {
                errors: 1,
                summary: e.to_string(),
                report: format!("{e}\n"),
            }
        }
    };
    let validated = crate::validate::validate(&source, chrono::Utc::now());
    let errors = validated.errors();
    match validated.plan {
        Some(plan) if errors == 0 && only.is_empty() => Checked::Valid(Box::new(plan)),
        Some(plan) if errors == 0 => match plan.only(only) {
            Ok(plan) => Checked::Valid(Box::new(plan)),
            Err(name) => Checked::Invalid {
                errors: 1,
                summary: format!("--only names `{name}`, which the new text no longer has"),
                report: format!("--only names `{name}`, which the new text no longer has\n"),
            },
        },
        _ => {
            let first = validated
                .diagnostics
                .iter()
                .find(|d| d.severity() == crate::diagnostics::Severity::Error);
            let summary = match first {
                Some(d) => {
                    let at = source.line_col(d.span.offset);
                    format!("{}:{}:{}: {}", source.name(), at.line, at.column, d.message)
                }
                None => "no plan could be built".into(),
            };
            Checked::Invalid {
                errors: errors.max(1),
                summary,
                report: crate::diagnostics::render::human(&source, &validated.diagnostics, false),
            }
        }
    }
}

/// Validate and apply; the HTTP answer: 200 with what changed, 422 with the diagnostics, 409 when the engine
/// cannot apply it (a channel in use changing kind).
pub async fn reload(ctx: &Context) -> Response {
    let _one_at_a_time = ctx.reloading.lock().await;
    crate::systemd::reloading();
    let answer = check_and_apply(ctx).await;
    crate::systemd::ready("running");
    answer
}

async fn check_and_apply(ctx: &Context) -> Response {
    let (file, only) = (ctx.file.clone(), ctx.only.clone());
    let Ok(checked) = tokio::task::spawn_blocking(move || check(&file, &only)).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "the reload check failed"})),
        )
            .into_response();
    };
    match checked {
        Checked::Invalid {
            errors,
            summary,
            report,
        } => {
            ctx.engine.rejected(errors, summary, report.clone());
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!("{errors} error(s) in the new text; the runner keeps its current plan"),
                    "errors": errors,
                    "report": report,
                })),
            )
                .into_response()
        }
        Checked::Valid(plan) => match ctx.engine.apply((*plan).clone()).await {
            Some(Ok(applied)) => {
                *ctx.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(plan));
                Json(applied).into_response()
            }
            Some(Err(reason)) => {
                (StatusCode::CONFLICT, Json(json!({ "error": reason }))).into_response()
            }
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "the runner is shutting down"})),
            )
                .into_response(),
        },
    }
}

/// How long the file must stay quiet before a change is reloaded (an editor's save is several events).
const SETTLE: Duration = Duration::from_millis(200);

/// `--watch`: reload when the file changes on disk. The folder is watched, not the file: editors save by
/// writing a new file and renaming it over the old one.
pub fn watch(ctx: Arc<Context>) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The file as named and, when that is a symlink, the file it points to now (a swapped link and an edited
    // target both count). The names are those of both; the folders watched follow the link after each change.
    let given = std::path::absolute(&ctx.file).unwrap_or_else(|_| ctx.file.clone());
    let names: Arc<std::sync::Mutex<Vec<std::ffi::OsString>>> = Default::default();
    let theirs = names.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let names = theirs.lock().unwrap_or_else(|e| e.into_inner());
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
            if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            ctx.reporter
                .notice(&format!("--watch: cannot watch {}: {e}", given.display()));
            return;
        }
    };
    let mut watched: Vec<std::path::PathBuf> = Vec::new();
    let mut follow = move |watcher: &mut notify::RecommendedWatcher| {
        let target = std::fs::canonicalize(&given).unwrap_or_else(|_| given.clone());
        let mut now = names.lock().unwrap_or_else(|e| e.into_inner());
        now.clear();
        for path in [&given, &target] {
            if let Some(name) = path.file_name() {
                now.push(name.to_os_string());
            }
            let Some(folder) = path.parent() else {
                continue;
            };
            if !watched.iter().any(|w| w == folder) {
                match watcher.watch(folder, notify::RecursiveMode::NonRecursive) {
                    Ok(()) => watched.push(folder.to_path_buf()),
                    Err(e) => eprintln!("flowrun: --watch: cannot watch {}: {e}", folder.display()),
                }
            }
        }
    };
    follow(&mut watcher);
    // The text as it is now, read before the runner says it serves (in the task, it would be read whenever the
    // task first ran: an edit made meanwhile would be taken for the old text and never reloaded).
    let mut last = std::fs::read(&ctx.file).ok();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait until the changes settle.
            while tokio::time::timeout(SETTLE, rx.recv())
                .await
                .is_ok_and(|m| m.is_some())
            {}
            follow(&mut watcher);
            let now = std::fs::read(&ctx.file).ok();
            if now == last {
                continue; // touched, not changed
            }
            last = now;
            let _ = reload(&ctx).await;
        }
    });
}
