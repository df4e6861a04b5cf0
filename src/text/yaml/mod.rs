//! A spanned YAML tree read with serde-saphyr.
//!
//! serde stops at the first error, but `validate` must report every problem in a file. So the YAML is read once
//! into this small tree (every node keeps its span, every mapping keeps repeated keys) and the document decoder
//! walks the tree, collecting problems as it goes.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

use crate::text::source::Span;

mod events;

/// One YAML value and where it stands in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Pairs in file order; a repeated key stays (the decoder reports it).
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The YAML type's name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as the text a user means by it (`env` values, keys): numbers and booleans become strings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }
}

/// The value half of a node, read through serde-saphyr's `Spanned` wrapper by [`Node`]'s `Deserialize`.
struct RawValue(Value);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<RawValue>::deserialize(deserializer)?;
        // `referenced` is where the text stands (for an alias, the alias itself), which is where a user looks. A
        // number or boolean reached through an alias or a merge key is the exception: it stands where it is
        // defined, so that its text there is what an `env` value takes (`1.10`, not `1.1`).
        let loc = match &spanned.value.0 {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => spanned.defined,
            _ => spanned.referenced,
        };
        let span = loc.span();
        let span = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => Span::new(o as usize, l as usize),
            _ => Span::new(0, 0),
        };
        Ok(Node {
            value: spanned.value.0,
            span,
        })
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor).map(RawValue)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        RawValue::deserialize(d).map(|r| r.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            pairs.push((key, value));
        }
        Ok(Value::Map(pairs))
    }
}

/// Why the text is not a YAML tree at all. `line`/`column` are 1-based (0 when the parser gave no place).
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
    pub line: usize,
    pub column: usize,
}

/// Parse the whole text: straight from the parser's events when the file is plain YAML (`events`), else
/// through serde-saphyr. Either way the tree, its spans and its errors are serde-saphyr's.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node {
            value: Value::Null,
            span: Span::new(0, 0),
        });
    }
    if let Some(tree) = events::parse(text) {
        return Ok(tree);
    }
    parse_with_serde(text)
}

/// The reference reading: serde-saphyr's spanned deserialization, for every file the fast path gives up on (and
/// for the tests that hold the fast path to it). Aliases are bounded so a "billion laughs" file fails fast
/// instead of eating memory.
pub fn parse_with_serde(text: &str) -> Result<Node, SyntaxError> {
    let mut limits = serde_saphyr::options::AliasLimits::default();
    limits.max_total_replayed_events = 200_000;
    limits.max_replay_stack_depth = 32;
    limits.max_alias_expansions_per_anchor = 10_000;
    // Room for any file within the 4 MiB limit (one node every two bytes at most): the parser's default stops at
    // 250,000 nodes, about 60,000 jobs written tightly. Aliases keep their own, tighter limits above.
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_nodes = 4_000_000;
    budget.max_events = 8_000_000;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        strict_booleans: true,
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::PassThrough,
        // `.inf` or a 400-digit number is a value like any other: an `env` value takes its text, any other key
        // says what it expected (a "syntax" error for the whole file would hide every other problem).
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::PassThrough,
        alias_limits: limits,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let location = e.location();
        let span = location
            .and_then(|l| {
                let s = l.span();
                s.byte_offset()
                    .map(|o| Span::new(o as usize, s.byte_len().unwrap_or(0) as usize))
            })
            .unwrap_or_else(|| Span::new(0, 0));
        let (line, column) = location.map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
        SyntaxError {
            message: short_message(&e.to_string()),
            span,
            line,
            column,
        }
    })
}

/// serde-saphyr's message carries its own rendered snippet; keep the first line without the position prefix
/// (the diagnostic shows the place itself).
fn short_message(full: &str) -> String {
    let first = full.lines().next().unwrap_or(full);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, message)) => message,
        None => first,
    };
    // The parser's own words for its safety limits, said for a person.
    if message.starts_with("budget breached: Depth") || message.starts_with("recursion limit") {
        return "the YAML is nested too deeply (the limit is 64 levels)".into();
    }
    if message.starts_with("multiple YAML documents") {
        return "a workflow file holds one YAML document; this one has several (`---` separates them)".into();
    }
    if let Some(what) = message.strip_prefix("budget breached: ") {
        return format!("the file is too large for the YAML reader ({what})");
    }
    if message.contains("alias replay limit") {
        return "aliases expand to too much (an alias bomb?); the limit is 200,000 expanded values"
            .into();
    }
    message.to_string()
}
