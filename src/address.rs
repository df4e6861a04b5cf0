//! A probe's address (`http` URL, `tcp` HOST:PORT) and the job's variables in it: `$NAME` and `${NAME}` take the
//! value of the job's `env` (or `env_file`) when each run starts, so a port chosen once in `env` serves the command
//! and its probe. Only the job's own variables, not the runner's environment: validation can then check every
//! name against the file (those only an `env_file` can set are said as a hint, as validation reads no other file).
//! `$$` is a `$`; a `$` that starts no name is itself.

/// A `$NAME` or `${NAME}` in an address: the name, and the bytes of the text it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    pub name: String,
    pub start: usize,
    pub len: usize,
}

/// A `${` that is not a variable (no name, or not closed): where it stands and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRef {
    pub start: usize,
    pub len: usize,
    pub problem: &'static str,
}

enum Piece<'a> {
    Text(&'a str),
    Var(VarRef),
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The text cut into literal parts and variables.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, BadRef> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut literal) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        out.push(Piece::Text(&text[literal..i]));
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push(Piece::Text("$"));
                i += 2;
            }
            Some(b'{') => {
                let Some(close) = text[i + 2..].find('}') else {
                    return Err(BadRef {
                        start: i,
                        len: text.len() - i,
                        problem: "`${` is not closed by `}`",
                    });
                };
                let name = &text[i + 2..i + 2 + close];
                let len = close + 3;
                let ok =
                    name.bytes().next().is_some_and(is_name_start) && name.bytes().all(is_name);
                if !ok {
                    return Err(BadRef {
                        start: i,
                        len,
                        problem: "`${...}` holds no variable name (letters, digits and `_`, not first a digit)",
                    });
                }
                out.push(Piece::Var(VarRef {
                    name: name.to_string(),
                    start: i,
                    len,
                }));
                i += len;
            }
            Some(&b) if is_name_start(b) => {
                let len = 1 + bytes[i + 1..].iter().take_while(|&&b| is_name(b)).count();
                out.push(Piece::Var(VarRef {
                    name: text[i + 1..i + len].to_string(),
                    start: i,
                    len,
                }));
                i += len;
            }
            // A `$` before anything else is only a `$`.
            _ => {
                out.push(Piece::Text("$"));
                i += 1;
            }
        }
        literal = i;
    }
    out.push(Piece::Text(&text[literal..]));
    Ok(out)
}

/// The variables `text` names, in order.
pub fn references(text: &str) -> Result<Vec<VarRef>, BadRef> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `text` with each variable replaced by its value; the first variable `value_of` does not know, if any.
pub fn expand<'v>(text: &str, value_of: impl Fn(&str) -> Option<&'v str>) -> Result<String, Unset> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text).map_err(Unset::Bad)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => match value_of(&v.name) {
                Some(value) => out.push_str(value),
                None => return Err(Unset::Name(v.name)),
            },
        }
    }
    Ok(out)
}

/// Why an address could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub enum Unset {
    /// A variable that nothing sets.
    Name(String),
    /// A `${` that is not a variable (validation refuses it; kept for completeness).
    Bad(BadRef),
}

/// An `http` probe's URL, `http://HOST[:PORT][/PATH]`; else the message that says what is wrong with it.
pub fn http_url(text: &str) -> Result<hyper::Uri, String> {
    let uri = text
        .parse::<hyper::Uri>()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    // What follows the host's last `:` (`[::1]` alone has none): `Uri` takes `host:abc` and then has no port.
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.starts_with('[') || host.ends_with(']'))
        .map(|(_, port)| port);
    let problem = match (uri.scheme_str(), uri.host()) {
        (Some("https"), _) => Some("the http probe speaks plain http, not TLS".to_string()),
        (Some(other), _) if other != "http" => Some(format!("`{other}` is not http")),
        (None, _) => Some("it has no `http://`".to_string()),
        (_, None) | (_, Some("")) => Some("it names no host".to_string()),
        _ if authority.contains('@') => {
            Some("a user or password in the URL is not sent (and would be shown in events)".into())
        }
        _ if authority.ends_with(':') || uri.port_u16() == Some(0) => {
            Some("the port is empty or 0".to_string())
        }
        _ if port.is_some_and(|p| p.parse::<u16>().is_err()) => {
            Some("the port is not a number from 1 to 65535".to_string())
        }
        _ => None,
    };
    match problem {
        Some(problem) => Err(format!("`{text}` cannot be probed: {problem}")),
        None => Ok(uri),
    }
}

/// A `tcp` probe's `HOST:PORT` (`[::1]:PORT` for an IPv6 address); else the message that says what is wrong.
pub fn tcp_address(text: &str) -> Result<(), String> {
    let checked = match text.contains("://") {
        true => Err("a tcp probe takes no scheme (for a URL, use `http:`)"),
        false => crate::values::check_host_port(text),
    };
    checked.map_err(|problem| format!("`{text}` is not HOST:PORT: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(String, usize, usize)> {
        references(text)
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.start, v.len))
            .collect()
    }

    #[test]
    fn both_forms_are_found_where_they_stand() {
        assert_eq!(
            names("http://$HOST:${PORT}/x"),
            [("HOST".into(), 7, 5), ("PORT".into(), 13, 7)]
        );
        assert_eq!(names("127.0.0.1:$PORT_2"), [("PORT_2".into(), 10, 7)]);
        assert_eq!(names("http://x/$$PATH/$/$1"), []);
    }

    #[test]
    fn a_brace_without_a_name_or_an_end_is_refused_where_it_stands() {
        let bad = references("http://x:${PORT/").unwrap_err();
        assert_eq!((bad.start, bad.len), (9, 7));
        let bad = references("x:${1A}").unwrap_err();
        assert_eq!((bad.start, bad.len), (2, 5));
        assert!(references("x:${}").is_err());
    }

    #[test]
    fn expansion_takes_the_values_and_names_the_first_unset() {
        let env = |n: &str| match n {
            "PORT" => Some("8080"),
            "HOST" => Some("db"),
            _ => None,
        };
        assert_eq!(
            expand("http://$HOST:${PORT}/$$x$", env).unwrap(),
            "http://db:8080/$x$"
        );
        assert_eq!(expand("no variables", env).unwrap(), "no variables");
        assert_eq!(expand("$HOST:$NOPE", env), Err(Unset::Name("NOPE".into())));
    }

    #[test]
    fn addresses_are_checked_after_expansion() {
        assert!(http_url("http://127.0.0.1:8080/health").is_ok());
        let e = http_url("http://127.0.0.1:$PORT/").unwrap_err();
        assert!(e.contains("port is not a number"), "{e}");
        assert!(http_url("https://x/").unwrap_err().contains("TLS"));
        assert!(tcp_address("127.0.0.1:5432").is_ok());
        assert!(tcp_address("127.0.0.1:$PORT").is_err());
    }
}
