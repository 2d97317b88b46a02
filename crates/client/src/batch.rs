//! Request batching: many concurrent callers, one message.
//!
//! A [`Batcher`] owns one background task per destination. Callers hand it one item each
//! ([`Batcher::call`]) and wait for their own answer. The task gathers items into a batch
//! until it holds `max_items` or `window` has passed since the first of them was handed in,
//! whichever comes first, then sends the batch with the given `send_batch` function (in a
//! task of its own, so the next batch is gathered while this one is in flight) and hands
//! the answers back to their callers in order. An error for the whole batch goes, cloned,
//! to every caller in it.
//!
//! Guarantees: no batch is held longer than the window (measured from when its first item
//! was handed in), no batch holds more than `max_items`, and a caller that stops waiting
//! (its future dropped) affects nobody else; its item is left out when it gave up before its
//! batch was sent. When every handle to the batcher is dropped, the task sends what it holds
//! and ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

/// How items are gathered into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most items in one batch; 1 sends every item alone (at 0 it is taken as 1).
    pub max_items: usize,
    /// Longest time the first item of a batch waits for others.
    pub window: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_items: 100,
            window: Duration::from_millis(1),
        }
    }
}

/// Why a caller got no answer of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError<E> {
    /// Sending the batch failed; every caller of that batch gets this error.
    Failed(E),
    /// The batch was answered with a different number of answers than it had items.
    Mismatch { sent: usize, answered: usize },
    /// The batcher's task is gone (runtime shut down, or `send_batch` panicked).
    Closed,
}

impl<E: std::fmt::Display> std::fmt::Display for BatchError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Failed(e) => write!(f, "{e}"),
            BatchError::Mismatch { sent, answered } => {
                write!(f, "a batch of {sent} items was answered with {answered} answers")
            }
            BatchError::Closed => write!(f, "the batcher stopped before answering"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for BatchError<E> {}

type Reply<A, E> = oneshot::Sender<Result<A, BatchError<E>>>;

/// One caller's item, waiting for its batch.
struct Pending<I, A, E> {
    item: I,
    reply: Reply<A, E>,
    /// When the caller handed the item in: the window of its batch starts here.
    since: Instant,
    /// The caller's span: the batch is sent as a child of its first caller's span (so the
    /// trace context travels with the message) and links to the others.
    span: tracing::Span,
}

/// Coalesces concurrent calls into batches for one destination. Cheap to clone; every
/// clone feeds the same background task, which ends when the last clone is dropped.
pub struct Batcher<I, A, E> {
    tx: mpsc::Sender<Pending<I, A, E>>,
}

impl<I, A, E> Clone for Batcher<I, A, E> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone() }
    }
}

impl<I, A, E> Batcher<I, A, E>
where
    I: Send + 'static,
    A: Send + 'static,
    E: Clone + Send + 'static,
{
    /// Starts the background task. `send_batch` gets the items of one batch, in the order
    /// they were handed in, and must answer with one answer per item, in the same order.
    ///
    /// Must be called within a Tokio runtime.
    pub fn new<F, Fut>(cfg: BatchConfig, send_batch: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, E>> + Send + 'static,
    {
        let max_items = cfg.max_items.max(1);
        // Bounded: under overload callers wait to hand their item in (back-pressure)
        // instead of growing an unbounded queue.
        let (tx, rx) = mpsc::channel(max_items.saturating_mul(8).clamp(1024, 1 << 16));
        tokio::spawn(gather(rx, max_items, cfg.window, Arc::new(send_batch)));
        Batcher { tx }
    }

    /// Hands one item in and waits for its answer.
    pub async fn call(&self, item: I) -> Result<A, BatchError<E>> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            item,
            reply,
            since: Instant::now(),
            span: tracing::Span::current(),
        };
        self.tx.send(pending).await.map_err(|_| BatchError::Closed)?;
        answer.await.unwrap_or(Err(BatchError::Closed))
    }
}

/// The background task: gathers batches and starts sending each one.
async fn gather<I, A, E, F, Fut>(
    mut rx: mpsc::Receiver<Pending<I, A, E>>,
    max_items: usize,
    window: Duration,
    send_batch: Arc<F>,
) where
    I: Send + 'static,
    A: Send + 'static,
    E: Clone + Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<A>, E>> + Send + 'static,
{
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else { break };
        let deadline = first.since + window;
        let mut batch = Vec::with_capacity(max_items.min(128));
        push_live(&mut batch, first);
        // What is queued already joins at once (this also covers a zero window) ...
        while batch.len() < max_items {
            match rx.try_recv() {
                Ok(p) => push_live(&mut batch, p),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // ... then wait for more until the batch is full or its window closes.
        while open && batch.len() < max_items {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => push_live(&mut batch, p),
                Ok(None) => open = false,
                Err(_elapsed) => break,
            }
        }
        if !batch.is_empty() {
            dispatch(batch, &send_batch);
        }
    }
}

/// Keeps an item unless its caller has stopped waiting.
fn push_live<I, A, E>(batch: &mut Vec<Pending<I, A, E>>, p: Pending<I, A, E>) {
    if !p.reply.is_closed() {
        batch.push(p);
    }
}

/// Sends one batch in its own task and fans the answers (or the error) out.
fn dispatch<I, A, E, F, Fut>(batch: Vec<Pending<I, A, E>>, send_batch: &Arc<F>)
where
    I: Send + 'static,
    A: Send + 'static,
    E: Clone + Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<A>, E>> + Send + 'static,
{
    let n = batch.len();
    let mut items = Vec::with_capacity(n);
    let mut replies = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    for p in batch {
        items.push(p.item);
        replies.push(p.reply);
        spans.push(p.span);
    }
    let span = tracing::info_span!(
        parent: &spans[0],
        "batch",
        messaging.batch.message_count = n as u64
    );
    for other in &spans[1..] {
        span.follows_from(other);
    }
    drop(spans);
    let send_batch = send_batch.clone();
    tokio::spawn(
        async move {
            match send_batch(items).await {
                Ok(answers) if answers.len() == n => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // A caller that stopped waiting just misses its answer.
                        let _ = reply.send(Ok(answer));
                    }
                }
                Ok(answers) => {
                    let e = BatchError::Mismatch { sent: n, answered: answers.len() };
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    let e = BatchError::Failed(e);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        .instrument(span),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A long window: batches then leave only when full (or when the batcher closes), so
    /// counts do not depend on timing.
    const LONG: Duration = Duration::from_secs(3600);
    /// Generous bound for anything that should happen "soon" on a loaded machine.
    const SOON: Duration = Duration::from_secs(2);

    type Log = Arc<Mutex<Vec<Vec<u64>>>>;

    /// A batcher that answers `x` with `x * 10` and logs every batch it sends.
    fn times_ten(max_items: usize, window: Duration) -> (Batcher<u64, u64, String>, Log) {
        let log: Log = Arc::default();
        let l = log.clone();
        let b = Batcher::new(BatchConfig { max_items, window }, move |items: Vec<u64>| {
            l.lock().unwrap().push(items.clone());
            async move { Ok::<_, String>(items.into_iter().map(|x| x * 10).collect()) }
        });
        (b, log)
    }

    async fn call_all(b: &Batcher<u64, u64, String>, items: std::ops::Range<u64>) -> Vec<(u64, Result<u64, BatchError<String>>)> {
        let mut tasks = tokio::task::JoinSet::new();
        for x in items {
            let b = b.clone();
            tasks.spawn(async move { (x, b.call(x).await) });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.expect("caller task"));
        }
        out.sort_by_key(|(x, _)| *x);
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_messages_and_get_their_own_answers() {
        let (b, log) = times_ten(50, LONG);
        let out = tokio::time::timeout(SOON * 5, call_all(&b, 0..200)).await.expect("all answered");
        for (x, r) in &out {
            assert_eq!(r, &Ok(x * 10), "caller {x}");
        }
        let log = log.lock().unwrap();
        // With a window this long only full batches leave: exactly 200 / 50.
        assert_eq!(log.len(), 4, "{log:?}");
        assert!(log.iter().all(|b| b.len() == 50));
        let mut sent: Vec<u64> = log.iter().flatten().copied().collect();
        sent.sort_unstable();
        assert_eq!(sent, (0..200).collect::<Vec<_>>(), "every item sent exactly once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_follow_the_order_of_the_batch() {
        // Answers depend on the position in the batch, not only on the item: a caller
        // gets the right one only if the fan-out keeps the order.
        let b: Batcher<String, String, String> =
            Batcher::new(BatchConfig { max_items: 8, window: LONG }, |items: Vec<String>| async move {
                Ok(items.iter().enumerate().map(|(i, s)| format!("{i}:{s}")).collect())
            });
        let mut tasks = tokio::task::JoinSet::new();
        for x in 0..64 {
            let b = b.clone();
            tasks.spawn(async move { (x, b.call(format!("q{x}")).await) });
        }
        let mut positions = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (x, answer) = r.expect("caller task");
            let answer = answer.expect("answered");
            let (pos, item) = answer.split_once(':').expect("i:item");
            assert_eq!(item, format!("q{x}"), "caller {x} got someone else's answer");
            positions.push(pos.parse::<usize>().unwrap());
        }
        assert_eq!(positions.len(), 64);
        assert!(positions.iter().all(|&p| p < 8));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_message_exceeds_max_items() {
        let (b, log) = times_ten(7, Duration::from_millis(5));
        let out = tokio::time::timeout(SOON * 5, call_all(&b, 0..250)).await.expect("all answered");
        assert!(out.iter().all(|(x, r)| r == &Ok(x * 10)));
        let log = log.lock().unwrap();
        assert!(log.iter().all(|b| !b.is_empty() && b.len() <= 7), "{log:?}");
        assert_eq!(log.iter().map(Vec::len).sum::<usize>(), 250);
        assert!(log.len() >= 250_usize.div_ceil(7), "at least ceil(250 / 7) messages");
    }

    #[tokio::test]
    async fn a_lone_item_leaves_after_the_window() {
        let (b, log) = times_ten(100, Duration::from_millis(20));
        let t = Instant::now();
        let r = tokio::time::timeout(SOON, b.call(4)).await.expect("answered within the bound");
        assert_eq!(r, Ok(40));
        // Held for the window (timers never fire early), not sent at once.
        assert!(t.elapsed() >= Duration::from_millis(20), "{:?}", t.elapsed());
        assert_eq!(*log.lock().unwrap(), vec![vec![4]]);
        // And again: the task keeps serving after a window-closed batch.
        let r = tokio::time::timeout(SOON, b.call(5)).await.expect("answered within the bound");
        assert_eq!(r, Ok(50));
    }

    #[tokio::test]
    async fn zero_window_and_max_one_send_at_once() {
        let (b, _) = times_ten(100, Duration::ZERO);
        assert_eq!(tokio::time::timeout(SOON, b.call(1)).await.expect("answered"), Ok(10));
        // max 1 = batching off: each item alone, even with a long window.
        let (b, log) = times_ten(1, LONG);
        let out = tokio::time::timeout(SOON * 5, call_all(&b, 0..20)).await.expect("all answered");
        assert!(out.iter().all(|(x, r)| r == &Ok(x * 10)));
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 20);
        assert!(log.iter().all(|b| b.len() == 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_for_the_message_goes_to_every_caller_of_the_batch() {
        let sends = Arc::new(Mutex::new(0usize));
        let s = sends.clone();
        let b: Batcher<u64, u64, String> =
            Batcher::new(BatchConfig { max_items: 10, window: LONG }, move |items: Vec<u64>| {
                *s.lock().unwrap() += 1;
                async move { Err(format!("no responders for {} queries", items.len())) }
            });
        let out = tokio::time::timeout(SOON * 5, call_all(&b, 0..30)).await.expect("all answered");
        for (x, r) in out {
            assert_eq!(r, Err(BatchError::Failed("no responders for 10 queries".to_string())), "caller {x}");
        }
        assert_eq!(*sends.lock().unwrap(), 3);

        // A wrong number of answers is an error for all of them too, not a misdelivery.
        let short: Batcher<u64, u64, String> =
            Batcher::new(BatchConfig { max_items: 4, window: LONG }, |items: Vec<u64>| async move {
                Ok(items.into_iter().skip(1).collect())
            });
        let mut tasks = tokio::task::JoinSet::new();
        for x in 0..4 {
            let b = short.clone();
            tasks.spawn(async move { b.call(x).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap(), Err(BatchError::Mismatch { sent: 4, answered: 3 }));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_does_not_disturb_the_others() {
        // The sender is slow, so some callers give up while their batch is in flight.
        let b: Batcher<u64, u64, String> =
            Batcher::new(BatchConfig { max_items: 100, window: Duration::from_millis(10) }, |items: Vec<u64>| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(items.into_iter().map(|x| x + 1).collect())
            });
        let mut tasks = tokio::task::JoinSet::new();
        let mut quitters = Vec::new();
        for x in 0..40u64 {
            let b = b.clone();
            if x % 2 == 0 {
                // Gives up almost at once: before or after its batch left, it does not matter.
                tasks.spawn(async move { (x, tokio::time::timeout(Duration::from_millis(1), b.call(x)).await.ok()) });
            } else if x % 5 == 0 {
                // Dropped outright.
                quitters.push(tokio::spawn(async move { b.call(x).await }));
            } else {
                tasks.spawn(async move { (x, Some(b.call(x).await)) });
            }
        }
        for q in &quitters {
            q.abort();
        }
        let mut answered = 0;
        while let Some(r) = tokio::time::timeout(SOON * 5, tasks.join_next()).await.expect("callers finish") {
            let (x, r) = r.expect("caller task");
            match r {
                Some(r) => {
                    assert_eq!(r, Ok(x + 1), "caller {x}");
                    answered += 1;
                }
                None => assert_eq!(x % 2, 0, "only the impatient callers time out"),
            }
        }
        assert!(answered >= 16, "the 16 patient callers are answered ({answered})");
        // The batcher keeps working afterwards.
        assert_eq!(tokio::time::timeout(SOON, b.call(99)).await.expect("answered"), Ok(100));
    }

    #[tokio::test]
    async fn the_task_ends_when_every_handle_is_dropped() {
        // The send function holds `guard`; it is dropped only when the task ends.
        let (guard, gone) = oneshot::channel::<()>();
        let b: Batcher<u64, u64, String> =
            Batcher::new(BatchConfig { max_items: 100, window: Duration::from_millis(1) }, move |items: Vec<u64>| {
                let _ = &guard;
                async move { Ok(items) }
            });
        let b2 = b.clone();
        assert_eq!(tokio::time::timeout(SOON, b2.call(3)).await.expect("answered"), Ok(3));
        drop(b);
        drop(b2);
        let r = tokio::time::timeout(SOON, gone).await.expect("the task ended");
        assert!(r.is_err(), "the send function was dropped, never called with the guard");
    }
}
