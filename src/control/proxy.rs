//! `flowrun ui FILE`: the web page of a running runner on a loopback port, for its owner. The runner's API is
//! only on its control socket (mode 0600) unless it was started with `--listen`; rather than ask it to open a
//! port, this command opens one and carries each request to the socket and the answer back (streams too). It
//! makes a token when it starts and prints the page's address with it in the fragment (`/#token=...`, as
//! Jupyter does; a fragment is never sent to a server nor kept in its logs): the page sends it as
//! `Authorization: Bearer` with every request, and everything but the page's own files needs it, reading
//! included, since the socket it stands for is the owner's alone.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::api::{error, unless_bearer};
use crate::error::Error;

struct Proxy {
    socket: PathBuf,
    token: String,
}

/// Serve the page of `file`'s runner on `127.0.0.1:port` (0: any free port) until Ctrl-C.
pub fn ui(file: &Path, state: Option<&str>, port: u16, open: bool) -> Result<i32, Error> {
    let socket = super::commands::socket(file, state)?;
    if std::os::unix::net::UnixStream::connect(&socket).is_err() {
        return Err(super::commands::no_runner(file, Some(&socket)));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Setup(format!("the async runtime cannot start: {e}")))?;
    let listener = {
        let _guard = runtime.enter();
        std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| Error::Setup(format!("127.0.0.1:{port}: {e}")))?
    };
    let address = listener
        .local_addr()
        .map_err(|e| Error::Setup(e.to_string()))?;
    let proxy = Arc::new(Proxy {
        socket,
        token: new_token(),
    });
    let url = format!("http://{address}/#token={}", proxy.token);
    crate::output::line_out(format_args!("{url}"));
    crate::output::line_err(format_args!(
        "flowrun: the page of {}'s runner is served at the address above until Ctrl-C; its token lets whoever \
         has it read and change what the runner does",
        file.display()
    ));
    if open {
        open_browser(&url);
    }
    runtime.block_on(async move {
        tokio::select! {
            _ = accept(listener, proxy) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    Ok(crate::exit::OK)
}

/// 32 random bytes, as hex.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `xdg-open URL` when there is one (a desktop); otherwise the address printed is all there is.
fn open_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        crate::output::line_err(format_args!(
            "flowrun: no xdg-open here: open the address above in a browser"
        ));
    }
}

async fn accept(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) {
    let router = axum::Router::new().fallback(forward).with_state(proxy);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or the like: wait a little rather than spin on the error.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(super::timeouts::client())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The page's own files are open; anything else needs the token, and goes to the runner's socket.
async fn forward(State(proxy): State<Arc<Proxy>>, mut request: Request) -> Response {
    let path = request.uri().path();
    let page = path == "/" || path.starts_with("/ui/");
    let why = "this page needs the token `flowrun ui` printed: open the address it printed (with #token=...)";
    if let Some(refusal) = (!page)
        .then(|| unless_bearer(request.headers(), &proxy.token, why))
        .flatten()
    {
        return refusal;
    }
    // The socket wants no token; the runner sees a request as from its owner.
    request.headers_mut().remove(header::AUTHORIZATION);
    let only_path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = only_path.parse::<Uri>().unwrap_or_default();
    match to_runner(&proxy.socket, request).await {
        Ok(response) => response,
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!(
                "the runner does not answer on {}: {e}",
                proxy.socket.display()
            ),
        ),
    }
}

/// One request over a fresh connection to the socket; the answer's body streams through as it comes.
async fn to_runner(socket: &Path, request: Request) -> Result<Response, String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.map(Body::new).into_response())
}
