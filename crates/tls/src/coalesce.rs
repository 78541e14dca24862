//! Responses gathered into one `write` per turn of the runtime.
//!
//! hyper's HTTP/2 connection task writes its frames out every time it is
//! polled, and tokio polls it right after each request task that finished a
//! response (the waker goes to the worker's LIFO slot). So a batch of puts
//! committed together left as one `writev` per response, each also running
//! the receiver's side of loopback TCP. grpc-go's writer yields once before
//! it flushes a small batch so the goroutines still making responses can add
//! theirs; etcd made 0.5–0.6 writes per put where Keel made 1.05–1.17
//! (64 and 256 clients, docs/benchmarks.md).
//!
//! [`Coalesced`] does the same below hyper: writes are copied into a buffer
//! and sent on `poll_flush`, and the first flush of a batch yields instead
//! (as `tokio::task::yield_now` does: the task is polled again once the
//! worker has run every task already runnable). The request tasks woken by
//! the same commit run in between and add their frames; the next flush
//! sends them all. With nothing else runnable the task is polled again at
//! once, so a lone response waits one task switch.
//!
//! Connections the [`Connector`](crate::Connector) dials are wrapped the
//! same way: on the client side the mirror image happens, a batch of
//! responses wakes the calling tasks, each sends its next request, and
//! each request would leave in a `write` of its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before a write is forced. Beyond a few dozen responses a
/// batch gains nothing, and a bulk transfer (a snapshot, a large range)
/// should not wait on a copy.
const CAPACITY: usize = 64 * 1024;
/// A buffer larger than this is given back once written: ten thousand idle
/// watch connections must not each keep the 64 KiB of their busiest batch.
const KEEP: usize = 4 * 1024;

/// `inner` with its writes gathered until a flush, and each batch's first
/// flush deferred by one turn of the runtime.
#[derive(Debug)]
pub(crate) struct Coalesced<T> {
    inner: T,
    buffer: Vec<u8>,
    /// How much of `buffer` is already written.
    sent: usize,
    /// Whether this batch has yielded once already.
    yielded: bool,
}

impl<T> Coalesced<T> {
    pub(crate) fn new(inner: T) -> Coalesced<T> {
        Coalesced { inner, buffer: Vec::new(), sent: 0, yielded: false }
    }

    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    fn pending(&self) -> usize {
        self.buffer.len() - self.sent
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending() > 0 {
            let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        if self.buffer.capacity() > KEEP {
            self.buffer = Vec::new();
        } else {
            self.buffer.clear();
        }
        self.sent = 0;
        self.yielded = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if this.pending() > 0 && this.pending() + total > CAPACITY {
            std::task::ready!(this.poll_drain(cx))?;
        }
        if this.pending() == 0 && total >= CAPACITY {
            // Bulk data goes straight out: there is nothing to gather it with.
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let mut taken = 0;
        for buf in bufs {
            let room = CAPACITY - this.pending();
            if room == 0 {
                break;
            }
            let take = buf.len().min(room);
            this.buffer.extend_from_slice(&buf[..take]);
            taken += take;
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            if !this.yielded {
                this.yielded = true;
                yield_to_runtime(cx);
                return Poll::Pending;
            }
            std::task::ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// `AsyncRead` and `AsyncWrite` for a connection type that wraps a
/// [`Coalesced`] stream in its field `io`, by that stream's.
macro_rules! delegate_to_io {
    ($conn:ty) => {
        impl tokio::io::AsyncRead for $conn {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
            }
        }

        impl tokio::io::AsyncWrite for $conn {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use delegate_to_io;

/// Has the task polled again once the runtime has run every other task
/// already runnable: tokio's `yield_now`, whose wake tokio defers until its
/// worker would otherwise park (after polling for I/O once more, which may
/// bring in more requests). A plain self-wake would put the task at the back
/// of the queue and also wake a parked worker to steal it: a futex call per
/// batch, and the connection moved to another core. Outside a runtime the
/// task is woken at once.
fn yield_to_runtime(cx: &mut Context<'_>) {
    let mut yielding = std::pin::pin!(tokio::task::yield_now());
    // The first poll only registers the wake; the future is done with then.
    let _ = std::future::Future::poll(yielding.as_mut(), cx);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A socket that records each write, accepting at most `limit` bytes per
    /// call and refusing (pending) every other call when `stalls` is set.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: Option<usize>,
        stalls: bool,
        stalled: bool,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.stalls && !std::mem::replace(&mut this.stalled, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.stalled = false;
            let take = this.limit.map_or(buf.len(), |limit| limit.min(buf.len()));
            this.writes.push(buf[..take].to_vec());
            Poll::Ready(Ok(take))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context() -> (Arc<CountingWaker>, std::task::Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counter.clone());
        (counter, waker)
    }

    fn write(io: &mut Coalesced<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) -> usize {
        match Pin::new(io).poll_write(cx, bytes) {
            Poll::Ready(Ok(written)) => written,
            other => panic!("write: {other:?}"),
        }
    }

    #[test]
    fn writes_of_one_batch_leave_in_one_write_after_one_yield() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        assert_eq!(write(&mut io, &mut cx, b"first "), 6);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending(), "the batch's first flush yields");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "and wakes its task, or it would never be polled again");
        assert!(io.get_ref().writes.is_empty());
        // Other tasks add their responses before the task is polled again.
        write(&mut io, &mut cx, b"second ");
        let vectored = [io::IoSlice::new(b"third"), io::IoSlice::new(b"!")];
        assert!(matches!(Pin::new(&mut io).poll_write_vectored(&mut cx, &vectored), Poll::Ready(Ok(6))));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, vec![b"first second third!".to_vec()]);

        // The next batch yields again.
        write(&mut io, &mut cx, b"next");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes.len(), 2);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_flush_with_nothing_buffered_neither_yields_nor_writes() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert!(io.get_ref().writes.is_empty());
    }

    #[test]
    fn partial_writes_keep_the_order_and_resume_where_they_stopped() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder { limit: Some(4), stalls: true, ..Recorder::default() });
        write(&mut io, &mut cx, b"0123456789");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending(), "yield");
        let mut polls = 0;
        while Pin::new(&mut io).poll_flush(&mut cx).is_pending() {
            polls += 1;
            assert!(polls < 10, "the drain never finished");
        }
        assert_eq!(io.get_ref().writes.concat(), b"0123456789");
        assert_eq!(io.get_ref().writes.len(), 3);
        // Appended after a finished drain, the buffer starts afresh.
        write(&mut io, &mut cx, b"ab");
        let _ = Pin::new(&mut io).poll_flush(&mut cx);
        while Pin::new(&mut io).poll_flush(&mut cx).is_pending() {}
        assert_eq!(io.get_ref().writes.concat(), b"0123456789ab");
    }

    #[test]
    fn a_full_buffer_is_written_before_more_is_taken_and_bulk_data_goes_straight_out() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        let small = vec![1u8; CAPACITY - 10];
        assert_eq!(write(&mut io, &mut cx, &small), small.len());
        assert!(io.get_ref().writes.is_empty());
        // 20 more bytes do not fit: what is buffered leaves first.
        assert_eq!(write(&mut io, &mut cx, &[2u8; 20]), 20);
        assert_eq!(io.get_ref().writes, vec![small.clone()]);
        while Pin::new(&mut io).poll_flush(&mut cx).is_pending() {}
        assert_eq!(io.get_ref().writes[1], vec![2u8; 20]);

        assert!(io.buffer.capacity() <= KEEP, "a large batch's buffer is not kept once written");

        let bulk = vec![3u8; CAPACITY * 2];
        assert_eq!(write(&mut io, &mut cx, &bulk), bulk.len());
        assert_eq!(io.get_ref().writes.len(), 3, "not copied, not held");
    }

    #[test]
    fn shutdown_sends_what_is_buffered_first() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        write(&mut io, &mut cx, b"goaway");
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, vec![b"goaway".to_vec()]);
        assert!(io.get_ref().shut);
    }

    /// On a runtime, shaped like hyper's HTTP/2 server: request tasks woken
    /// together (by a committed batch) each queue a response and
    /// wake the connection task, which writes what is queued and flushes.
    /// Gathered, the eight responses leave in two writes (the first one's
    /// flush yields, the other seven queue meanwhile); written straight, as
    /// tokio runs the connection task right after each request task, eight.
    #[test]
    fn responses_of_tasks_woken_together_share_writes() {
        assert_eq!(writes_for_eight_responses(true), 2);
        assert_eq!(writes_for_eight_responses(false), 8);
    }

    fn writes_for_eight_responses(gathered: bool) -> usize {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // One worker, and the whole scenario on it, so the order tasks run
        // in is tokio's alone.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        let scenario = runtime.spawn(async move {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let writes = Arc::new(AtomicUsize::new(0));
            let server = CountedWrites { inner: server, writes: writes.clone() };
            let queue = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
            let queued = Arc::new(tokio::sync::Notify::new());
            let connection = {
                let (queue, queued) = (queue.clone(), queued.clone());
                tokio::spawn(async move {
                    let mut io: Pin<Box<dyn AsyncWrite + Send>> =
                        if gathered { Box::pin(Coalesced::new(server)) } else { Box::pin(server) };
                    let mut sent = 0;
                    while sent < 8 {
                        queued.notified().await;
                        let responses = std::mem::take(&mut *queue.lock().unwrap());
                        sent += responses.len();
                        io.write_all(&responses).await.unwrap();
                        io.flush().await.unwrap();
                    }
                })
            };
            let mut replies = Vec::new();
            let mut requests = Vec::new();
            for i in 0..8u8 {
                let (reply, answer) = tokio::sync::oneshot::channel::<()>();
                replies.push(reply);
                let (queue, queued) = (queue.clone(), queued.clone());
                requests.push(tokio::spawn(async move {
                    answer.await.unwrap();
                    queue.lock().unwrap().push(i);
                    queued.notify_one();
                }));
            }
            // Every task parks on what it waits for.
            tokio::task::yield_now().await;
            // The batch is committed: its waiters are answered together.
            replies.into_iter().for_each(|reply| reply.send(()).unwrap());
            let mut got = [0u8; 8];
            client.read_exact(&mut got).await.unwrap();
            connection.await.unwrap();
            for request in requests {
                request.await.unwrap();
            }
            writes.load(Ordering::SeqCst)
        });
        runtime.block_on(scenario).unwrap()
    }

    struct CountedWrites {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for CountedWrites {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut this.inner).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }
}
