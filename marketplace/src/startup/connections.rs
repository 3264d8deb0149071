//! The accept loop of every HTTP port (the API's, a worker's health
//! probes'): HTTP/1.1 connections served by hyper, each held to a time
//! limit while the server waits for its client, and at most
//! `--max-connections` of them at once.
//!
//! - Header-read timeout: a request's line and headers must arrive within
//!   `--header-read-timeout` of their first byte (of the connection's
//!   opening, for its first request); a client trickling them (slowloris)
//!   is disconnected.
//! - Idle timeout: a keep-alive connection with no request for
//!   `--idle-timeout` is closed.
//! - Connection cap: past `--max-connections` the loop stops accepting;
//!   new connections wait in the kernel's listen backlog until one closes
//!   (clients see a slow connect, not an error, and a flood costs no
//!   accept/close work). Both timeouts make sure one does close.
//! - Graceful shutdown: the listener closes, idle connections close at
//!   once, in-flight requests finish and their connections then close.
//!
//! hyper's own header-read timer starts as soon as a connection waits for
//! a request, idle or not, so it cannot tell the two apart: it is set to
//! their sum as a backstop, and a watchdog per connection applies each.
//! HTTP/2 is not served (it never was): the API's clients speak HTTP/1.1.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::config::ConnectionArgs;

/// How connections are held.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    /// Longest wait for a request's head, from its first byte.
    pub header_read_timeout: Duration,
    /// Longest wait for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl From<&ConnectionArgs> for ConnectionLimits {
    fn from(args: &ConnectionArgs) -> Self {
        Self {
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// gracefully (see the module's documentation).
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut full = false;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && !full {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached; new connections wait in the backlog"
            );
        }
        full = slots.available_permits() == 0;
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            activity: Arc::new(Activity::new()),
            peer,
            limits,
        };
        connections.spawn(connection.run(stream, router.clone(), http.clone(), stop.clone(), slot));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// Accepting failed: a connection reset before it was accepted is the
/// peer's business; anything else (out of file descriptors) is logged and
/// retried after a pause, as the resource may come back.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One accepted connection.
struct Connection {
    activity: Arc<Activity>,
    peer: SocketAddr,
    limits: ConnectionLimits,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        router: Router,
        http: http1::Builder,
        stop: CancellationToken,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let Self {
            activity,
            peer,
            limits,
        } = self;
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let busy = activity.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let guard = busy.begin();
            let answer = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = answer.await;
                drop(guard);
                response
            }
        });
        let connection = http.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            let wake = activity
                .deadline(&limits)
                .unwrap_or_else(|| Instant::now() + limits.header_read_timeout);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    break;
                }
                () = stop.cancelled(), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                // A request began or ended, or the next one's first byte
                // came: the deadline moved.
                () = activity.changed.notified() => {}
                () = tokio::time::sleep_until(wake) => {
                    if activity.deadline(&limits).is_some_and(|deadline| Instant::now() >= deadline) {
                        // No request is in flight: dropping the connection
                        // loses nothing.
                        tracing::debug!(%peer, "closing a connection idle or too slow to send its request");
                        break;
                    }
                }
            }
        }
        drop(slot);
    }
}

/// What a connection is doing, for its watchdog. Times are milliseconds
/// since `opened`.
struct Activity {
    opened: Instant,
    /// Requests being answered.
    busy: AtomicUsize,
    /// When the connection last started waiting for a request.
    ready_at: AtomicU64,
    /// When the first byte of the awaited request arrived ([`NONE`] if not yet).
    head_started: AtomicU64,
    /// Whether a request was answered already (the first one has no idle time).
    served: AtomicBool,
    /// Wakes the watchdog when the deadline moves.
    changed: Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            ready_at: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            served: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.opened + Duration::from_millis(millis)
    }

    /// A request is being answered until the guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// Bytes arrived: the awaited request's head has started.
    fn read(&self) {
        if self.busy.load(Ordering::SeqCst) == 0
            && self
                .head_started
                .compare_exchange(NONE, self.now(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed if nothing happens before, or
    /// `None` while a request is answered (the request timeout bounds it).
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::SeqCst);
        if head != NONE {
            return Some(self.at(head) + limits.header_read_timeout);
        }
        let ready = self.at(self.ready_at.load(Ordering::SeqCst));
        Some(if self.served.load(Ordering::SeqCst) {
            ready + limits.idle_timeout
        } else {
            ready + limits.header_read_timeout
        })
    }
}

/// A request in flight on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.served.store(true, Ordering::SeqCst);
        activity.ready_at.store(activity.now(), Ordering::SeqCst);
        activity.head_started.store(NONE, Ordering::SeqCst);
        activity.busy.fetch_sub(1, Ordering::SeqCst);
        activity.changed.notify_one();
    }
}

/// A stream that reports the bytes it reads to the connection's activity.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
