//! What the tests of the web page and its API share: a runner serving on a loopback port (with a token), its
//! JSON events read on a thread of their own, and a minimal HTTP client (the server is what is tested, not a
//! client library's leniency). Every wait polls a condition against a deadline.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "the-test-token";

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("flowrun")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A runner of a workflow written in a temporary folder, listening on a loopback port with [`TOKEN`].
pub struct Runner {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    pub state: PathBuf,
    events: Arc<(Mutex<Vec<Value>>, Condvar)>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runner {
    pub fn start(yaml: &str) -> Runner {
        Runner::start_with(yaml, &[])
    }

    /// [`Runner::start`], with more arguments of the runner.
    pub fn start_with(yaml: &str, extra: &[&str]) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flow.yaml");
        std::fs::write(&file, yaml).unwrap();
        let state = dir.path().join("state");
        let port = free_port();
        let mut child = Command::new(bin())
            .arg(&file)
            .args(["--log-format", "json", "--state"])
            .arg(&state)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("FLOWRUN_TOKEN", TOKEN)
            .env("XDG_STATE_HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let events: Arc<(Mutex<Vec<Value>>, Condvar)> = Default::default();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let kept = events.clone();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if let Ok(e) = serde_json::from_str::<Value>(&line) {
                    kept.0.lock().unwrap().push(e);
                    kept.1.notify_all();
                }
            }
        });
        let runner = Runner {
            child,
            port,
            file,
            state,
            dir,
            events,
        };
        runner.wait_event(|e| e["event"] == "runner.start", Duration::from_secs(20));
        runner
    }

    /// The first event that matches, waiting up to `limit` for it.
    pub fn wait_event(&self, what: impl Fn(&Value) -> bool, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        let (lock, more) = &*self.events;
        let mut seen = lock.lock().unwrap();
        loop {
            if let Some(e) = seen.iter().find(|e| what(e)) {
                return e.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no such event within {limit:?}: {seen:#?}");
            seen = more.wait_timeout(seen, left).unwrap().0;
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        request(self.port, "GET", path, &[])
    }

    pub fn post(&self, path: &str) -> Answer {
        request(
            self.port,
            "POST",
            path,
            &[&format!("Authorization: Bearer {TOKEN}")],
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An HTTP answer: status, headers (names in lower case), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request, the connection closed after it.
pub fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A server-sent event stream being read: events as (type, data).
pub struct Sse {
    reader: BufReader<TcpStream>,
}

impl Sse {
    pub fn open(port: u16, path: &str, headers: &[&str]) -> Sse {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let mut sse = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line
                .to_ascii_lowercase()
                .starts_with("content-type: text/event-stream")
            {
                sse = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        assert!(sse, "an event stream");
        Sse { reader }
    }

    /// The next event (chunk sizes of the transfer encoding are skipped: they are not `field: value` lines).
    pub fn next(&mut self) -> Option<(String, String)> {
        let mut kind = "message".to_string();
        let mut data: Vec<String> = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return Some((kind, data.join("\n")));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
    }

    /// Events until one matches (`None`: the stream ended first).
    pub fn until(&mut self, what: impl Fn(&str, &str) -> bool) -> Option<Vec<(String, String)>> {
        let mut seen = Vec::new();
        loop {
            let (kind, data) = self.next()?;
            let done = what(&kind, &data);
            seen.push((kind, data));
            if done {
                return Some(seen);
            }
        }
    }
}

/// Create a file: the gate a job polls for (the test decides when the job goes on).
pub fn open_gate(path: &Path) {
    std::fs::write(path, "").unwrap();
}
