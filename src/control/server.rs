//! Listening: the Unix socket in the state directory and the optional TCP address; each connection served by
//! hyper's HTTP/1.1 with a header timeout (a client that never finishes its request is dropped, and so is a
//! keep-alive connection left idle: hyper starts the same timer while it waits for the next request) and a bound
//! on connections alive at once per listener (a flood waits at `accept`, it does not grow the runner).

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use super::Context;

/// The largest request head read (the request line and headers); more is answered 431 by hyper.
const MAX_HEAD: usize = 64 * 1024;

/// Connections served at once on the owner's Unix socket.
const MAX_UNIX_CONNECTIONS: usize = 256;
/// Connections served at once on TCP: fewer, for anonymous readers, who can never take the socket's slots.
const MAX_TCP_CONNECTIONS: usize = 64;
/// Listeners bound before the runner starts (so a bad `--listen` is an error before anything runs).
#[derive(Default)]
pub struct Listeners {
    pub unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    pub tcp: Option<std::net::TcpListener>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bind the control socket in `state` (a stale one from a dead runner is replaced: the caller holds the state's
/// lock) and the TCP address. A socket that cannot be bound is a notice (`Err` with the text), not a failure.
pub fn bind(
    state: Option<&Path>,
    listen: Option<SocketAddr>,
) -> (Listeners, Option<String>, Result<(), String>) {
    let mut listeners = Listeners::default();
    let mut notice = None;
    if let Some(dir) = state {
        let path = dir.join("control.sock");
        let _ = std::fs::remove_file(&path);
        // Made 0600 by the umask at its birth, not by a chmod of its path after (which follows a symlink that
        // someone put there meanwhile). Nothing else of the runner makes files at this point.
        // SAFETY: umask only sets the mode mask of files made from now on; the old one is put back at once.
        let old = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(&path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        match bound {
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                listeners.unix = Some((l, path));
            }
            Err(e) => {
                notice = Some(format!(
                    "no control socket at {} ({e}): `flowrun status/trigger/stop/reload` cannot reach this runner{}",
                    path.display(),
                    if path.as_os_str().len() > 100 {
                        " (the path is longer than a socket path may be: give a shorter --state)"
                    } else {
                        ""
                    }
                ))
            }
        }
    }
    let tcp = match listen {
        Some(addr) => match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                listeners.tcp = Some(l);
                Ok(())
            }
            Err(e) => Err(format!("--listen {addr}: {e}")),
        },
        None => Ok(()),
    };
    (listeners, notice, tcp)
}

pub fn serve(mut listeners: Listeners, ctx: Arc<Context>) {
    if let Some((listener, path)) = listeners.unix.take() {
        let router = super::api::router(ctx.clone(), false);
        let slots = Arc::new(Semaphore::new(MAX_UNIX_CONNECTIONS));
        tokio::spawn(async move {
            // The socket file goes when the API ends (its tasks are dropped with its runtime).
            let _remove = RemoveOnDrop(path);
            if let Ok(listener) = tokio::net::UnixListener::from_std(listener) {
                accept_loop(listener, router, slots).await;
            }
        });
    }
    if let Some(listener) = listeners.tcp.take() {
        let router = super::api::router(ctx, true);
        let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        tokio::spawn(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                accept_loop(listener, router, slots).await;
            }
        });
    }
}

/// A listener the API is served on.
trait Accept: Send + Sync + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn next(&self) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn next(&self) -> std::io::Result<Self::Stream> {
        Ok(self.accept().await?.0)
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn next(&self) -> std::io::Result<Self::Stream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Accept while a connection slot is free; each connection is served by its own task.
async fn accept_loop(listener: impl Accept, router: axum::Router, slots: Arc<Semaphore>) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.next().await {
            Ok(stream) => connection(stream, router.clone(), permit),
            // Out of file descriptors or the like: wait a little rather than spin on the error.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn connection<S>(stream: S, router: axum::Router, permit: tokio::sync::OwnedSemaphorePermit)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = TowerToHyperService::new(router);
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // Also how long an idle keep-alive connection is kept: hyper waits for the next request's head with
            // this timer.
            .header_read_timeout(super::timeouts::client())
            // A client that shuts its write side after the request (`nc -N`, `socat`) still gets its answer: a
            // trigger was carried out while its answer was dropped.
            .half_close(true)
            // Request heads are small here: 64 KiB bounds what 320 connections can make the runner hold.
            .max_buf_size(MAX_HEAD)
            .serve_connection(
                TokioIo::new(super::stalled::Stalled::new(
                    stream,
                    super::timeouts::client(),
                )),
                service,
            )
            .await;
        drop(permit);
    });
}
