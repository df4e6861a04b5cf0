//! One HTTP/1.1 request over a connected stream, through hyper's client: the control commands' requests on the
//! control socket and the engine's `http` readiness probes share it (one HTTP stack, not two).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 request over a connected stream (the control socket, or a probe's TCP connection).
pub async fn exchange<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// `GET path` from `host` over a connected stream: the answer's status code (an `http` readiness probe).
pub async fn get_status<S>(stream: S, host: &str, path: &str) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", host)
        .header(
            "user-agent",
            concat!("flowrun/", env!("CARGO_PKG_VERSION"), " (ready probe)"),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = exchange(stream, request)
        .await
        .map_err(|e| format!("GET {path} from {host}: {e}"))?;
    Ok(response.status().as_u16())
}
