//! Every answer the tests see, checked against the committed OpenAPI document (`src/control/openapi.json`): its
//! status is documented for its route and method, and a JSON body matches the documented schema.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use serde_json::Value;
use std::sync::OnceLock;

fn doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(include_str!("../../src/control/openapi.json"))
            .expect("the OpenAPI document is JSON")
    })
}

/// The validator of one answer's schema, compiled once (a test may check a thousand answers).
fn validator(key: &str, schema: &Value) -> std::sync::Arc<jsonschema::Validator> {
    static CACHE: OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
    > = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(key.to_string())
        .or_insert_with(|| {
            let schema = serde_json::json!({
                "allOf": [schema.clone()],
                "components": doc()["components"].clone(),
            });
            std::sync::Arc::new(jsonschema::validator_for(&schema).expect("a valid schema"))
        })
        .clone()
}

/// The documented route a concrete path answers (`/api/v1/jobs/a/trigger` -> `/api/v1/jobs/{job}/trigger`).
pub fn template(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    doc()["paths"]
        .as_object()?
        .keys()
        .find(|t| {
            let want: Vec<&str> = t.split('/').collect();
            want.len() == parts.len()
                && want.iter().zip(&parts).all(|(w, p)| {
                    w == p || (w.starts_with('{') && w.ends_with('}') && !p.is_empty())
                })
        })
        .cloned()
}

/// Answers the server gives on any route before the route sees the request (the document's description says
/// so): a request head too large (431), a request that did not arrive in time (408), a body over the limit (413).
const BEFORE_ANY_ROUTE: [u16; 3] = [408, 413, 431];

/// Check one answer. Paths and methods that are not routes (a 404 or 405 of the router) have nothing to match.
pub fn conforms(method: &str, path: &str, status: u16, content_type: Option<&str>, body: &str) {
    let Some(template) = template(path) else {
        return;
    };
    if BEFORE_ANY_ROUTE.contains(&status) {
        let said = doc()["info"]["description"].as_str().unwrap_or_default();
        assert!(
            said.contains(&status.to_string()),
            "{status} is not in the document's description"
        );
        return;
    }
    let op = &doc()["paths"][&template][method.to_ascii_lowercase()];
    if !op.is_object() {
        return;
    }
    let documented = &op["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {template} answered {status}, which the OpenAPI document does not list: {body}"
    );
    let Some(content) = documented["content"].as_object() else {
        return;
    };
    let media = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    assert!(
        content.contains_key(media),
        "{method} {template} {status}: {media:?} is not among {:?}",
        content.keys().collect::<Vec<_>>()
    );
    if media != "application/json" {
        return;
    }
    let validator = validator(
        &format!("{method} {template} {status}"),
        &content[media]["schema"],
    );
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {template}: not JSON ({e}): {body}"));
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status} does not match its schema: {errors:#?}\n{value:#}"
    );
}
