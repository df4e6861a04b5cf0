//! Where each byte of a quoted one-line YAML scalar's value stands in the file, so that a diagnostic about part of
//! the value (a cron field) points at the text that wrote it: `"0 0 3\x32 * *"` has the field `32`, written `3\x32`.

/// For each byte of `value`, the range of `raw` (the scalar as written, quotes included) it came from: a plain
/// character maps to itself, an escape (`\x32`, `\t`, `''`) to the whole escape. `None` when `raw` is not a quoted
/// scalar on one line that reads as `value` (a folded or multi-line one: line breaks fold away).
pub fn byte_sources(raw: &str, value: &str) -> Option<Vec<(usize, usize)>> {
    let double = raw.starts_with('"') && raw.ends_with('"');
    let single = raw.starts_with('\'') && raw.ends_with('\'');
    if raw.len() < 2 || !(double || single) || raw.contains(['\n', '\r']) {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    let mut map = Vec::with_capacity(value.len());
    let mut decoded = String::with_capacity(value.len());
    let mut chars = inner.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = i + 1;
        let (ch, end) = match c {
            '\\' if double => {
                let (_, e) = chars.next()?;
                let hex = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => 0,
                };
                let ch = if hex > 0 {
                    let digits: String = (0..hex)
                        .map(|_| chars.next().map(|(_, d)| d))
                        .collect::<Option<_>>()?;
                    char::from_u32(u32::from_str_radix(&digits, 16).ok()?)?
                } else {
                    simple_escape(e)?
                };
                (ch, at + 2 + hex)
            }
            '\'' if single => {
                // `''` is one quote.
                chars.next().filter(|&(_, q)| q == '\'')?;
                ('\'', at + 2)
            }
            c => (c, at + c.len_utf8()),
        };
        let start = decoded.len();
        decoded.push(ch);
        if ch.len_utf8() == end - at {
            // A character as written: each byte is its own source.
            map.extend((0..ch.len_utf8()).map(|k| (at + k, at + k + 1)));
        } else {
            map.extend((start..decoded.len()).map(|_| (at, end)));
        }
    }
    (decoded == value).then_some(map)
}

/// The character a one-letter escape of YAML 1.2 stands for.
fn simple_escape(e: char) -> Option<char> {
    Some(match e {
        '0' => '\0',
        'a' => '\x07',
        'b' => '\x08',
        't' | '\t' => '\t',
        'n' => '\n',
        'v' => '\x0B',
        'f' => '\x0C',
        'r' => '\r',
        'e' => '\x1B',
        ' ' => ' ',
        '"' => '"',
        '/' => '/',
        '\\' => '\\',
        'N' => '\u{85}',
        '_' => '\u{A0}',
        'L' => '\u{2028}',
        'P' => '\u{2029}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::byte_sources;

    /// The source text of `value[start..end]`.
    fn written(raw: &str, value: &str, start: usize, end: usize) -> Option<String> {
        let map = byte_sources(raw, value)?;
        Some(raw[map[start].0..map[end - 1].1].to_string())
    }

    #[test]
    fn an_escape_maps_to_the_whole_escape() {
        let raw = r#""0 0 3\x32 * *""#;
        assert_eq!(written(raw, "0 0 32 * *", 4, 6).as_deref(), Some(r"3\x32"));
        assert_eq!(written(raw, "0 0 32 * *", 0, 1).as_deref(), Some("0"));
        assert_eq!(written(r#""a\tb""#, "a\tb", 2, 3).as_deref(), Some("b"));
        assert_eq!(
            written(r#""\u00e9x""#, "éx", 0, 2).as_deref(),
            Some(r"\u00e9")
        );
        assert_eq!(written(r#""é\"""#, "é\"", 0, 2).as_deref(), Some("é"));
        assert_eq!(written("'it''s'", "it's", 2, 4).as_deref(), Some("''s"));
    }

    #[test]
    fn what_is_not_one_quoted_line_is_not_mapped() {
        assert!(byte_sources("plain", "plain").is_none());
        assert!(byte_sources("\"a\n  b\"", "a b").is_none());
        assert!(byte_sources("\"\\q\"", "q").is_none());
        assert!(byte_sources("\"a\"", "b").is_none());
        assert!(byte_sources("\"\\x4\"", "").is_none());
    }
}
