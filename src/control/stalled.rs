//! A connection whose client stops reading: the answer cannot be written, and without a bound the connection
//! (and its slot among the listener's few) would be held for ever. [`Stalled`] fails a write that makes no
//! progress for the client timeout, so hyper drops the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct Stalled<S> {
    inner: S,
    limit: Duration,
    /// Running while a write waits; gone once any byte is written.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> Stalled<S> {
    pub fn new(inner: S, limit: Duration) -> Stalled<S> {
        Stalled {
            inner,
            limit,
            waiting: None,
        }
    }

    /// A write that could not go on: fails once it has waited for the limit.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the answer for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            done => {
                self.waiting = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            done => {
                self.waiting = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit_and_one_that_moves_does_not() {
        // A pipe of 64 bytes that nobody reads: the second write waits, then fails.
        let (reader, writer) = tokio::io::duplex(64);
        let mut stalled = Stalled::new(writer, Duration::from_secs(10));
        stalled.write_all(&[0; 64]).await.unwrap();
        let e = stalled.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(reader);
        // Read as it is written: never fails, however long it takes in all.
        let (mut reader, writer) = tokio::io::duplex(64);
        let mut stalled = Stalled::new(writer, Duration::from_secs(10));
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        for _ in 0..100 {
            stalled.write_all(&[1; 64]).await.unwrap();
        }
        stalled.shutdown().await.unwrap();
        drop(stalled);
        assert_eq!(drain.await.unwrap(), 6400);
    }
}
