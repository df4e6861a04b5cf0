//! Many requests, one question: however many clients ask for the status (`/api/v1/status`, `/metrics`), the
//! dispatcher is asked at most once at a time. A request that arrives while an ask is in flight waits for the
//! next ask, which starts when the one in flight has its answer: so no request gets an answer older than its
//! own arrival, and one answer serves every request that waited for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One ask of the source: its answer, `None` when the source is gone.
pub type Ask<T> = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<T>> + Send>> + Send + Sync>;

pub struct Coalescer<T> {
    ask: Ask<T>,
    state: Arc<Mutex<State<T>>>,
}

struct State<T> {
    /// An ask is in flight (its driver task is alive).
    asking: bool,
    /// Requests that arrived since the ask in flight started: the next ask serves them.
    waiting: Vec<oneshot::Sender<Option<T>>>,
}

impl<T: Clone + Send + 'static> Coalescer<T> {
    pub fn new(ask: Ask<T>) -> Coalescer<T> {
        Coalescer {
            ask,
            state: Arc::new(Mutex::new(State {
                asking: false,
                waiting: Vec::new(),
            })),
        }
    }

    /// An answer asked after this call (registered now, before the returned future is first polled).
    pub fn get(&self) -> impl Future<Output = Option<T>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.waiting.push(reply);
            !std::mem::replace(&mut state.asking, true)
        };
        if start {
            // Its own task, not the first request's: a client that hangs up does not call off the others' answer.
            tokio::spawn(drive(self.ask.clone(), self.state.clone()));
        }
        async move { answer.await.ok().flatten() }
    }
}

/// Ask for the requests waiting now, answer them all, and again while more came meanwhile.
async fn drive<T: Clone>(ask: Ask<T>, state: Arc<Mutex<State<T>>>) {
    loop {
        let batch = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            if state.waiting.is_empty() {
                state.asking = false;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        let answer = ask().await;
        for reply in batch {
            let _ = reply.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A source whose asks say when they start and answer their number when the test lets them.
    fn source() -> (
        Coalescer<u32>,
        mpsc::UnboundedReceiver<()>,
        mpsc::UnboundedSender<()>,
    ) {
        let (started, on_start) = mpsc::unbounded_channel();
        let (release, released) = mpsc::unbounded_channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(released));
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ask: Ask<u32> = Arc::new(move || {
            let (started, released, count) = (started.clone(), released.clone(), count.clone());
            Box::pin(async move {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let _ = started.send(());
                released.lock().await.recv().await?;
                Some(n)
            })
        });
        (Coalescer::new(ask), on_start, release)
    }

    /// Let every other task run until none can go further (the test's runtime has one thread).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn requests_during_an_ask_share_the_next_one() {
        let (coalescer, mut started, release) = source();
        let first = tokio::spawn(coalescer.get());
        started.recv().await.unwrap();
        // Ten requests arrive while ask 1 is in flight.
        let later: Vec<_> = (0..10).map(|_| tokio::spawn(coalescer.get())).collect();
        settle().await;
        assert!(
            started.try_recv().is_err(),
            "no second ask while one is in flight"
        );
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(1));
        // They wait for ask 2, started after ask 1 answered: never ask 1's answer, older than they are.
        started.recv().await.unwrap();
        release.send(()).unwrap();
        for request in later {
            assert_eq!(request.await.unwrap(), Some(2));
        }
        settle().await;
        assert!(started.try_recv().is_err(), "two asks for eleven requests");
    }

    #[tokio::test]
    async fn a_request_after_the_answer_asks_again() {
        let (coalescer, mut started, release) = source();
        release.send(()).unwrap();
        assert_eq!(coalescer.get().await, Some(1));
        started.recv().await.unwrap();
        release.send(()).unwrap();
        assert_eq!(coalescer.get().await, Some(2));
    }

    #[tokio::test]
    async fn a_request_that_hangs_up_does_not_call_off_the_ask() {
        let (coalescer, mut started, release) = source();
        let gone = coalescer.get();
        let stays = tokio::spawn(coalescer.get());
        drop(gone);
        started.recv().await.unwrap();
        release.send(()).unwrap();
        assert_eq!(stays.await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_source_gone_answers_none_to_all() {
        let (coalescer, _started, release) = source();
        let waiting: Vec<_> = (0..3).map(|_| tokio::spawn(coalescer.get())).collect();
        drop(release);
        for request in waiting {
            assert_eq!(request.await.unwrap(), None);
        }
    }
}
