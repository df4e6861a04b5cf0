//! The commands' side of the control socket (`flowrun status/trigger/stop/reload FILE`): one HTTP/1.1 request
//! over `STATE/control.sock`, through hyper's client.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::path::Path;
use std::time::Duration;

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// Nothing listens: no runner is up (or it has no socket).
    NoRunner,
    Other(String),
}

/// How long a connection may take (a runner that accepts nothing is stopped or hung).
const CONNECT: Duration = Duration::from_secs(5);

/// Send `method path` with an optional JSON body; the status code and the body. `timeout`: how long the answer
/// may take (`None`: as long as it takes, for `trigger --wait`).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(u16, String), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.to_string()))?;
    runtime.block_on(async {
        let Some(limit) = timeout else {
            return send(socket, method, path, body).await;
        };
        match tokio::time::timeout(limit, send(socket, method, path, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(Failure::Other(format!(
                "the runner did not answer within {}s (is it stopped or hung?)",
                limit.as_secs()
            ))),
        }
    })
}

async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), Failure> {
    let connect = tokio::time::timeout(CONNECT, tokio::net::UnixStream::connect(socket)).await;
    let connect = connect.map_err(|_| {
        Failure::Other(format!(
            "{} accepts no connection (is the runner stopped or hung?)",
            socket.display()
        ))
    })?;
    let stream = match connect {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Failure::NoRunner)
        }
        Err(e) => return Err(Failure::Other(format!("{}: {e}", socket.display()))),
    };
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "flowrun")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .map_err(|e| Failure::Other(e.to_string()))?;
    let response = crate::http::exchange(stream, request)
        .await
        .map_err(|e| Failure::Other(format!("the runner did not answer: {e}")))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Other(e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
