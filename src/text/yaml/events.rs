//! The YAML tree read straight from the parser's events: the fast path of [`super::parse`].
//!
//! serde-saphyr's spanned deserialization visits two location maps per node; for a file of 10,000 jobs it took
//! 125 ms where the parser's events alone take 37 ms, most of `flowrun validate`'s time. This path builds the same
//! tree from the same parser (granit-parser, which serde-saphyr drives with these options), and gives up — the
//! caller then reads the text through serde-saphyr — on anything it does not resolve exactly as serde-saphyr does:
//! anchors and aliases, tags, `<<` merge keys, directives, several documents, deep nesting, a plain scalar that
//! could be read as a number other than a plain decimal integer, and every error. So the tree, its spans and
//! every message stay serde-saphyr's (the tests compare both on every fixture, example and generated file).

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use super::{Node, Value};
use crate::text::source::Span;

/// Deeper than this goes to serde-saphyr, whose depth limit (64) and its message apply.
const MAX_DEPTH: usize = 32;

/// Below serde-saphyr's budget as `crate::text::yaml::parse_with_serde` sets it (4,000,000 nodes, 8,000,000 events).
const MAX_NODES: usize = 3_900_000;
const MAX_EVENTS: usize = 7_900_000;

/// An open collection: where it starts, and what it holds so far.
enum Open {
    Seq(Span, Vec<Node>),
    /// Pairs, and a key waiting for its value.
    Map(Span, Vec<(Node, Node)>, Option<Node>),
}

/// The tree of a plain YAML text, or `None` when serde-saphyr must read it.
pub fn parse(text: &str) -> Option<Node> {
    let mut open: Vec<Open> = Vec::new();
    let mut root = None;
    let mut documents = 0;
    let (mut events, mut nodes) = (0usize, 0usize);
    for item in Parser::new_from_str_with_options(text, parser_options()) {
        let (event, span) = item.ok()?;
        // serde-saphyr's budget (`crate::text::yaml::parse_with_serde`) refuses more; near it, it decides.
        events += 1;
        if events > MAX_EVENTS {
            return None;
        }
        if matches!(
            event,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
        ) {
            nodes += 1;
            if nodes > MAX_NODES {
                return None;
            }
        }
        let span = Span::new(
            span.start.byte_offset()?,
            span.end.byte_offset()? - span.start.byte_offset()?,
        );
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Comment(..) => {
                continue
            }
            Event::DocumentStart(_, version) => {
                documents += 1;
                if documents > 1 || version.is_some() {
                    return None;
                }
                continue;
            }
            Event::Scalar(text, style, 0, None) => Node {
                value: scalar(&text, style)?,
                span,
            },
            Event::SequenceStart(_, 0, None) | Event::MappingStart(_, 0, None)
                if open.len() >= MAX_DEPTH =>
            {
                return None
            }
            Event::SequenceStart(_, 0, None) => {
                open.push(Open::Seq(span, Vec::new()));
                continue;
            }
            Event::MappingStart(_, 0, None) => {
                open.push(Open::Map(span, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop()? {
                Open::Seq(span, items) => Node {
                    value: Value::Seq(items),
                    span,
                },
                Open::Map(span, pairs, None) => Node {
                    value: Value::Map(pairs),
                    span,
                },
                Open::Map(_, _, Some(_)) => return None,
            },
            // Anchors, aliases, tags.
            _ => return None,
        };
        attach(&mut open, &mut root, node)?;
    }
    if !open.is_empty() {
        return None;
    }
    root
}

/// The parser as serde-saphyr sets it up (comments are looked ahead through, up to its limit).
fn parser_options() -> serde_saphyr::granit_parser::Options {
    let budget = serde_saphyr::budget::Budget::default();
    let mut options = serde_saphyr::granit_parser::Options::default();
    options.emit_comments = true;
    options.max_buffered_comment_events = budget.max_buffered_comment_events;
    options.simple_key_max_lookahead = budget.simple_key_max_lookahead;
    options.flow_nesting_limit = budget.flow_nesting_limit;
    options
}

/// A finished node goes to the collection open around it (a sequence's item, a mapping's key or value), or is
/// the root; `None` when serde-saphyr must decide (a second root, a merge key).
fn attach(open: &mut [Open], root: &mut Option<Node>, node: Node) -> Option<()> {
    match open.last_mut() {
        None if root.is_none() => *root = Some(node),
        None => return None,
        Some(Open::Seq(_, items)) => items.push(node),
        Some(Open::Map(_, pairs, key)) => match key.take() {
            Some(k) => pairs.push((k, node)),
            // A merge key is serde-saphyr's to expand.
            None if matches!(&node.value, Value::Str(k) if k == "<<") => return None,
            None => *key = Some(node),
        },
    }
    Some(())
}

/// A scalar as serde-saphyr reads it into an untyped value (YAML 1.2 core schema, strict booleans), or `None`
/// when that is not certain here.
fn scalar(text: &str, style: ScalarStyle) -> Option<Value> {
    if style != ScalarStyle::Plain {
        return Some(Value::Str(text.to_string()));
    }
    Some(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        "<<" => Value::Str(text.to_string()),
        _ => {
            let unsigned = text.strip_prefix('-').unwrap_or(text);
            let decimal = !unsigned.is_empty()
                && unsigned.bytes().all(|b| b.is_ascii_digit())
                && (unsigned == "0" || !unsigned.starts_with('0'));
            if decimal {
                // As serde-saphyr visits them: i64 for a sign, u64 (then i64 in our tree) without.
                return text.parse::<i64>().ok().map(Value::Int);
            }
            if could_be_a_number(text) {
                return None;
            }
            Value::Str(text.to_string())
        }
    })
}

/// Whether serde-saphyr might read this plain scalar as a number (an integer with a sign, a radix or
/// underscores, a float, `.inf`, `.nan`): then it decides. Durations, times and sizes (`30s`, `10:00`, `64KiB`)
/// are not.
fn could_be_a_number(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let Some(&first) = unsigned.as_bytes().first() else {
        return false;
    };
    if first == b'.' {
        return true;
    }
    if !first.is_ascii_digit() {
        return false;
    }
    let radix = unsigned.len() > 1
        && first == b'0'
        && matches!(
            unsigned.as_bytes()[1],
            b'x' | b'X' | b'o' | b'O' | b'b' | b'B'
        );
    radix
        || text.contains('_')
        || unsigned.bytes().all(|b| b.is_ascii_digit())
        || text.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::yaml::parse_with_serde;
    use proptest::prelude::*;

    /// The fast path either gives up or builds exactly serde-saphyr's tree.
    fn agrees(text: &str) -> bool {
        match parse(text) {
            None => true,
            Some(tree) => {
                let reference = parse_with_serde(text).ok();
                assert_eq!(Some(&tree), reference.as_ref(), "for {text:?}");
                true
            }
        }
    }

    fn files(dir: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    #[test]
    fn every_example_and_fixture_reads_as_serde_saphyr_reads_it() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        )
        .unwrap();
        let blocks = readme
            .split("```yaml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap().to_string());
        let texts: Vec<String> = files("workflows")
            .into_iter()
            .chain(files("tests/fixtures/invalid"))
            .chain(blocks)
            .collect();
        let mut fast = 0;
        for text in &texts {
            assert!(agrees(text));
            fast += usize::from(parse(text).is_some());
        }
        // The examples are plain YAML: they take the fast path.
        assert!(fast >= files("workflows").len(), "{fast}");
    }

    #[test]
    fn what_it_leaves_to_serde_saphyr() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 5\n",
            "base: { a: 1 }\nc:\n  <<: { b: 2 }\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\n---\nb: 2\n",
            "a: 0x1F\n",
            "a: 1_000\n",
            "a: 1.5\n",
            "a: .inf\n",
            "a: +5\n",
            "a: 007\n",
            "a: 1e3\n",
            "a: [\n",
            "e: -\n",
            "a: 99999999999999999999\n",
            // Beyond the parser's look-ahead through comments (serde-saphyr's error).
            &format!("a:\n{}b: 1\n", "  #\n".repeat(40)),
            // Beyond the node budget: 3 nodes per 2 bytes.
            &format!("[{}]", ":,".repeat(1_333_334)),
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn what_it_reads_itself() {
        for text in [
            "jobs:\n  a: { run: [echo, hi], trigger: { cron: \"*/5 * * * *\" } }\n",
            "a: 30s\nb: 10:00\nc: 64KiB\nd: 2026-12-01T10:00:00\ne: '-'\nf: 0\ng: -12\n",
            "a: ~\nb: null\nc:\nd: true\ne: FALSE\nf: 'quoted'\ng: \"x\\ty\"\nh: |\n  line\n",
            "- a\n- [b, c]\n- {d: e}\n",
            "a: 1\na: 2\n",
            "# a comment\nk: v # trailing\n",
            "ünïcode: \"ÿ\"\n",
        ] {
            assert!(parse(text).is_some(), "{text:?}");
            assert!(agrees(text));
        }
    }

    /// Scalars the fast path reads itself: times, sizes, words, quotes, plain integers.
    #[rustfmt::skip]
    const PLAIN: &[&str] = &[
        "1", "0", "-3", "-0", "9223372036854775807", "30s", "10:00", "2026-01-01", "5m", "64KiB", "x:y",
        "true", "True", "no", "yes", "null", "~", "'q'", "\"d\"", "a b", "inf", "nan",
    ];

    /// Scalars it leaves to serde-saphyr (or that make the text invalid in some places).
    #[rustfmt::skip]
    const OTHERS: &[&str] = &[
        "007", "1.5", "1e3", ".5", "+2", "0x10", "1_0", ".inf", "", "-", "<<",
        "18446744073709551615", "9223372036854775808",
    ];

    /// Plain-looking YAML from a small grammar of keys, scalars and flow collections.
    fn yaml_text(scalars: Vec<&'static str>) -> impl Strategy<Value = String> {
        let leaf = prop::sample::select(scalars).prop_map(|s| s.to_string());
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec(("[a-c]{1,2}", inner), 0..4).prop_map(|kv| {
                    let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{{}}}", pairs.join(", "))
                }),
            ]
        })
        .prop_map(|v| format!("root: {v}\nother: [1, x]\n"))
    }

    proptest! {
        #[test]
        fn generated_files_read_as_serde_saphyr_reads_them(text in yaml_text([PLAIN, OTHERS].concat())) {
            prop_assert!(agrees(&text));
        }

        #[test]
        fn plain_generated_files_take_the_fast_path(text in yaml_text(PLAIN.to_vec())) {
            prop_assert!(parse(&text).is_some(), "{}", text);
            prop_assert!(agrees(&text));
        }
    }
}
