//! The web page (SPEC §10): plain HTML, CSS and JavaScript modules embedded in the binary, served at `/` and
//! `/ui/FILE` of the control API (and so of `--listen` and `flowrun ui`). Everything the page shows it reads from
//! the API, as a script would.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The page's files: name, media type, text.
pub const FILES: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("index.html")),
    ("style.css", CSS, include_str!("style.css")),
    ("errors.js", JS, include_str!("errors.js")),
    ("app.js", JS, include_str!("app.js")),
    ("store.js", JS, include_str!("store.js")),
    ("actions.js", JS, include_str!("actions.js")),
    ("api.js", JS, include_str!("api.js")),
    ("format.js", JS, include_str!("format.js")),
    ("jobs.js", JS, include_str!("jobs.js")),
    ("timeline.js", JS, include_str!("timeline.js")),
    ("run.js", JS, include_str!("run.js")),
    ("history.js", JS, include_str!("history.js")),
    ("channels.js", JS, include_str!("channels.js")),
    ("graph.js", JS, include_str!("graph.js")),
    ("runners.js", JS, include_str!("runners.js")),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles from this origin only (no inline script: an injected job name cannot run); the graph's
/// SVG carries its own `<style>`, hence inline styles.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn index() -> Response {
    file("index.html")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

fn file(name: &str) -> Response {
    let Some((_, kind, text)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        let body = serde_json::json!({ "error": format!("the page has no file `{name}`") });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let mut response = (*text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The page changes with the binary: a browser asks again rather than keep an old copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_weighs_under_300_kib() {
        let weight: usize = super::FILES.iter().map(|(_, _, text)| text.len()).sum();
        assert!(weight < 300 * 1024, "{weight} bytes");
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        for (name, _, text) in super::FILES {
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let target = line.rsplit("'./").next().and_then(|t| t.split('\'').next());
                let target = target.unwrap_or_default();
                assert!(
                    super::FILES.iter().any(|(n, _, _)| *n == target),
                    "{name} imports `{target}`, which is not served"
                );
            }
        }
    }
}
