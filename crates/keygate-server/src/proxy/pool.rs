//! keygate's own HTTP/1 connection pool for plain-HTTP origins: a model server on the
//! same host or network, an internal gateway, a provider's fake. A call takes an idle
//! connection (or opens one), sends on it with hyper's HTTP/1 connection API, and lends
//! it to the answer until the answer's body has been read to its end (or dropped): only
//! then does it go back, so the pool only ever holds connections no call is using.
//! hyper-util's pool does the same with a spawned task and several boxed futures per
//! call; this is the part of the outbound cost that profile showed (BENCHMARKS.md).
//!
//! What it keeps from hyper-util's pool: a connection idle for `idle_timeout` is closed
//! (swept in the background, and never taken); at most `max_idle` idle connections per
//! origin (one more is closed, not kept); a request that a closing keep-alive connection
//! handed back unsent (the origin closed it just as it was taken) is sent once more on a
//! new connection, while one that went out is never sent twice; connections are opened
//! by hyper-util's `HttpConnector`, as before (name resolution, the connect timeout
//! shared among a name's addresses, IPv6 and IPv4 raced). HTTPS origins are not pooled
//! here: their connection may be HTTP/2, which hyper-util's client negotiates.
//!
//! One difference: hyper-util waits for a connection that is about to be free as well as
//! for a new one, where this pool opens a new one when none is free at once. A connection
//! whose answer has just ended may not say it is free yet (on a runtime with several
//! threads, for a few microseconds): under load that costs a connection more, kept and
//! used by the next calls, never a wrong answer.

use axum::http::{header, uri, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use keygate_core::fastmap::FastMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

type Body = axum::body::Body;
type Sender = http1::SendRequest<Body>;

/// How long connections are kept and how many.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The TCP handshake, shared among a name's addresses (name resolution is not
    /// counted, as with hyper-util's client before).
    pub connect_timeout: Duration,
    /// A connection unused this long is closed.
    pub idle_timeout: Duration,
    /// Idle connections kept per origin.
    pub max_idle: usize,
}

/// Why a call on the pool got no answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PoolError {
    /// No connection within the connect timeout, or refused.
    Connect,
    /// The exchange broke off (or the request was not one to send).
    Failed,
}

/// The pool: idle connections by origin.
#[derive(Clone)]
pub(crate) struct Http1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    origins: Mutex<FastMap<uri::Authority, Arc<Slot>>>,
    connector: HttpConnector,
    /// The background sweep of idle connections, started with the first connection (it
    /// needs the runtime) and again if that runtime has gone.
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    limits: Limits,
}

/// One origin: its idle connections, the most recently returned last, and the `Host`
/// its requests carry (made once; `None` for an authority no header can hold).
struct Slot {
    idle: Mutex<Vec<Idle>>,
    host: Option<HeaderValue>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    /// Neither closed nor idle for `idle_timeout` at `now` (it may still be finishing
    /// its last answer: `take` asks whether it is ready).
    fn usable(&self, now: Instant, idle_timeout: Duration) -> bool {
        !self.sender.is_closed() && now.saturating_duration_since(self.since) < idle_timeout
    }
}

/// A connection lent to one answer: back to its origin's idle connections when dropped,
/// which the answer's body does at its end. A connection whose answer was not read to
/// its end is closed by hyper and is never taken again (hyper says it is not ready until
/// then, so returning it early could not lend it twice either).
pub(crate) struct Lease {
    slot: Arc<Slot>,
    sender: Option<Sender>,
    limits: Limits,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if sender.is_closed() {
                return;
            }
            let now = Instant::now();
            let mut idle = lock(&self.slot.idle);
            if idle.len() >= self.limits.max_idle {
                // Full: make room by what is closed or expired, not at this one's cost.
                idle.retain(|c| c.usable(now, self.limits.idle_timeout));
            }
            if idle.len() < self.limits.max_idle {
                idle.push(Idle { sender, since: now });
            }
        }
    }
}

/// The connector both outbound clients open TCP connections with: Nagle off (small
/// writes, an answer's headers or a stream's events, go out at once), at most
/// `connect_timeout` for the handshake, shared among a name's addresses.
pub(crate) fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    // HTTPS URIs reach it too when it is wrapped for TLS (hyper-util's client).
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector
}

impl Http1Pool {
    pub fn new(limits: Limits) -> Self {
        let connector = connector(limits.connect_timeout);
        let inner = Inner { origins: Mutex::default(), connector, sweeper: Mutex::default(), limits };
        Self { inner: Arc::new(inner) }
    }

    /// Sends `request`, whose URI is absolute (`http://host:port/path?query`), on a
    /// connection to its authority; `Host` is set from the authority unless present (a
    /// catalog header stays). The answer comes with the lease of its connection, to be
    /// dropped when its body has been read.
    pub async fn send(&self, request: Request<Body>) -> Result<(Response<Incoming>, Lease), PoolError> {
        let (authority, mut request) = origin_form(request)?;
        let slot = self.inner.slot(&authority);
        if !request.headers().contains_key(header::HOST) {
            let host = slot.host.clone().ok_or(PoolError::Failed)?;
            request.headers_mut().insert(header::HOST, host);
        }
        let taken = self.inner.take(&slot, Instant::now());
        self.inner.send_on(slot, &authority, taken, request).await
    }

    /// Idle connections to `authority` (tests).
    #[cfg(test)]
    pub(super) fn idle(&self, authority: &str) -> usize {
        let authority: uri::Authority = authority.parse().expect("an authority");
        lock(&self.inner.origins).get(&authority).map_or(0, |slot| lock(&slot.idle).len())
    }
}

impl Inner {
    fn slot(&self, authority: &uri::Authority) -> Arc<Slot> {
        let mut origins = lock(&self.origins);
        if let Some(slot) = origins.get(authority) {
            return slot.clone();
        }
        let slot = Slot { idle: Mutex::default(), host: host_header(authority) };
        origins.entry(authority.clone()).or_insert_with(|| Arc::new(slot)).clone()
    }

    /// The most recently returned idle connection that is ready; closed and expired ones
    /// on the way are dropped. One whose previous answer has only just ended may not be
    /// ready yet: it stays.
    fn take(&self, slot: &Slot, now: Instant) -> Option<Sender> {
        let mut idle = lock(&slot.idle);
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let conn = &idle[i];
            if !conn.usable(now, self.limits.idle_timeout) {
                idle.remove(i);
            } else if conn.sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
        }
        None
    }

    /// Sends `request` on `taken`, or on a new connection when there is none or `taken`
    /// handed the request back unsent (it closed as it was taken: the origin closed an idle
    /// connection). A request that went out is never sent again.
    async fn send_on(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        authority: &uri::Authority,
        taken: Option<Sender>,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        let request = match taken {
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(slot, sender))),
                Err(mut e) => e.take_message().ok_or(PoolError::Failed)?,
            },
            None => request,
        };
        let mut sender = self.connect(authority).await?;
        let response = sender.try_send_request(request).await.map_err(|_| PoolError::Failed)?;
        Ok((response, self.lease(slot, sender)))
    }

    fn lease(&self, slot: Arc<Slot>, sender: Sender) -> Lease {
        Lease { slot, sender: Some(sender), limits: self.limits }
    }

    async fn connect(self: &Arc<Self>, authority: &uri::Authority) -> Result<Sender, PoolError> {
        let target = Uri::builder()
            .scheme(uri::Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| PoolError::Connect)?;
        let stream =
            tower::ServiceExt::oneshot(self.connector.clone(), target).await.map_err(|_| PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new().handshake(stream).await.map_err(|_| PoolError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an upstream connection ended with an error");
            }
        });
        self.start_sweeper();
        Ok(sender)
    }

    fn start_sweeper(self: &Arc<Self>) {
        let mut sweeper = lock(&self.sweeper);
        if sweeper.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let pool = Arc::downgrade(self);
        // Often enough that a connection outlives its idle timeout by a quarter at most.
        let every = (self.limits.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(10));
        *sweeper = Some(tokio::spawn(sweep(pool, every)));
    }

    /// Drops closed and expired idle connections; forgets origins left with none.
    fn sweep(&self, now: Instant) {
        let mut origins = lock(&self.origins);
        origins.retain(|_, slot| {
            let mut idle = lock(&slot.idle);
            idle.retain(|c| c.usable(now, self.limits.idle_timeout));
            // A slot some call still holds stays, so its connection comes back to it.
            !idle.is_empty() || Arc::strong_count(slot) > 1
        });
    }
}

/// Sweeps until the pool is gone.
async fn sweep(pool: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep(Instant::now());
    }
}

/// `request` with its URI in origin form (HTTP/1 to an origin names the path alone),
/// and the authority it named.
fn origin_form(mut request: Request<Body>) -> Result<(uri::Authority, Request<Body>), PoolError> {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    let authority = parts.authority.take().ok_or(PoolError::Failed)?;
    parts.scheme = None;
    // (A parsed URI's path is never empty: `http://host` reads as `http://host/`.)
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| PoolError::Failed)?;
    Ok((authority, request))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here leaves its data half-changed on a panic.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `Host` for a plain-HTTP authority, as hyper's client writes it: the host, and the
/// port unless it is 80.
fn host_header(authority: &uri::Authority) -> Option<HeaderValue> {
    let value = match authority.port_u16() {
        Some(port) if port != 80 => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub(in crate::proxy) fn limits() -> Limits {
        Limits { connect_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(90), max_idle: 8 }
    }

    /// An origin on `listener`. It answers each request with its own path as the body
    /// (after `hold`; `/wait` after 300 ms, `/slow…` after 30 s), `/no-content` with a
    /// 204, and `/stream` with one chunk of a body it never finishes; 100 ms after `/last`
    /// it closes the connection without saying so, as after `per_connection` answers. It
    /// counts the connections it accepted and those keygate closed.
    pub(in crate::proxy) struct Origin {
        pub addr: String,
        pub accepted: Arc<AtomicUsize>,
        pub closed: Arc<AtomicUsize>,
        pub heads: Arc<Mutex<Vec<String>>>,
    }

    pub(in crate::proxy) async fn origin(per_connection: usize, hold: Duration) -> Origin {
        origin_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), per_connection, hold)
    }

    fn origin_on(listener: TcpListener, per_connection: usize, hold: Duration) -> Origin {
        let addr = listener.local_addr().unwrap().to_string();
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, c, h) = (accepted.clone(), closed.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, per_connection, hold, c.clone(), h.clone()));
            }
        });
        Origin { addr, accepted, closed, heads }
    }

    async fn serve(
        mut socket: TcpStream,
        per_connection: usize,
        hold: Duration,
        closed: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    ) {
        let mut answered = 0;
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Requests here have no body: one ends at its blank line.
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf.drain(..end + 4).collect::<Vec<u8>>()).into_owned();
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                heads.lock().unwrap().push(head);
                let wait = match path.as_str() {
                    p if p.starts_with("/slow") => Duration::from_secs(30),
                    "/wait" => Duration::from_millis(300),
                    _ => hold,
                };
                tokio::time::sleep(wait).await;
                let answer = match path.as_str() {
                    "/no-content" => "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
                    "/stream" => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n".to_owned(),
                    _ => format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}", path.len()),
                };
                if socket.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                answered += 1;
                if path == "/last" {
                    // After the client has taken the answer (and given the connection back).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return;
                }
                if answered == per_connection {
                    return;
                }
            }
        }
    }

    fn get(addr: &str, path: &str) -> Request<Body> {
        Request::builder().uri(format!("http://{addr}{path}")).body(Body::empty()).unwrap()
    }

    /// The answer's body, read to its end before the connection goes back.
    async fn call_path(pool: &Http1Pool, addr: &str, path: &str) -> Result<String, PoolError> {
        let (response, lease) = pool.send(get(addr, path)).await?;
        let body = response.into_body().collect().await.map_err(|_| PoolError::Failed)?.to_bytes();
        drop(lease);
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    async fn call(pool: &Http1Pool, addr: &str) -> Result<String, PoolError> {
        call_path(pool, addr, "/v1/models").await
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 5 s");
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_connection_in_origin_form_with_host() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        for i in 0..5 {
            assert_eq!(call_path(&pool, &o.addr, &format!("/v1/{i}")).await.unwrap(), format!("/v1/{i}"));
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle(&o.addr), 1);
        call_path(&pool, &o.addr, "/v1/chat/completions?a=1&b=%2F").await.unwrap();
        let head = o.heads.lock().unwrap().last().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /v1/chat/completions?a=1&b=%2f http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {}\r\n", o.addr)), "{head}");
        // A `Host` the request already carries (a catalog header) stays.
        let mut request = get(&o.addr, "/v1/own-host");
        request.headers_mut().insert(header::HOST, HeaderValue::from_static("models.internal"));
        let (response, lease) = pool.send(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        drop(lease);
        let head = o.heads.lock().unwrap().last().unwrap().to_ascii_lowercase();
        assert!(head.contains("\r\nhost: models.internal\r\n") && head.matches("\r\nhost:").count() == 1, "{head}");
        // A URI without a path asks for `/`.
        assert_eq!(call_path(&pool, &o.addr, "").await.unwrap(), "/");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_each_get_their_own_answer() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(Limits { max_idle: 4, ..limits() });
        let callers: Vec<_> = (0..24)
            .map(|c| {
                let (pool, addr) = (pool.clone(), o.addr.clone());
                tokio::spawn(async move {
                    for i in 0..40 {
                        let path = format!("/caller/{c}/call/{i}");
                        assert_eq!(call_path(&pool, &addr, &path).await.unwrap(), path);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        // Connections were reused: far fewer than the 960 calls, and at most four kept.
        assert!(o.accepted.load(Ordering::SeqCst) < 960 / 2, "{} connections", o.accepted.load(Ordering::SeqCst));
        assert!(pool.idle(&o.addr) <= 4);
    }

    #[tokio::test]
    async fn a_connection_is_not_lent_twice_and_comes_back_only_when_its_answer_is_read() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        let (first, first_lease) = pool.send(get(&o.addr, "/a")).await.unwrap();
        // The first answer's body is unread: the second call needs a connection of its own.
        let (second, second_lease) = pool.send(get(&o.addr, "/b")).await.unwrap();
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle(&o.addr), 0);
        for (response, lease, path) in [(first, first_lease, "/a"), (second, second_lease, "/b")] {
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), path);
            drop(lease);
        }
        assert_eq!(pool.idle(&o.addr), 2);
    }

    #[tokio::test]
    async fn an_origin_that_closes_its_keep_alive_connections_costs_no_call() {
        // One answer a connection, closed without `Connection: close`: each next call
        // finds its connection gone and opens another.
        let o = origin(1, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        for _ in 0..20 {
            assert_eq!(call(&pool, &o.addr).await.unwrap(), "/v1/models");
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_request_handed_back_unsent_goes_out_once_on_a_new_connection() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        let authority: uri::Authority = o.addr.parse().unwrap();
        let slot = pool.inner.slot(&authority);
        // A connection holding a request it has not written yet hands the next one back
        // unsent, as one that closed as it was taken does.
        let mut busy = pool.inner.connect(&authority).await.unwrap();
        let first = busy.try_send_request(origin_form(get(&o.addr, "/first")).unwrap().1);
        let second = origin_form(get(&o.addr, "/second")).unwrap().1;
        let (second, lease) = pool.inner.send_on(slot, &authority, Some(busy), second).await.unwrap();
        assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "/second");
        drop(lease);
        assert_eq!(first.await.unwrap().into_body().collect().await.unwrap().to_bytes(), "/first");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
        let mut lines: Vec<String> =
            o.heads.lock().unwrap().iter().map(|h| h.lines().next().unwrap().to_owned()).collect();
        lines.sort();
        assert_eq!(lines, ["GET /first HTTP/1.1", "GET /second HTTP/1.1"]);
    }

    #[tokio::test]
    async fn a_request_that_went_out_is_not_sent_again() {
        // An origin that answers the first request on a connection and reads the second
        // one without answering, then closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let r = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let r = r.clone();
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    while socket.read(&mut chunk).await.unwrap_or(0) > 0 {
                        if r.fetch_add(1, Ordering::SeqCst) == 0 {
                            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                        } else {
                            return;
                        }
                    }
                });
            }
        });
        let pool = Http1Pool::new(limits());
        assert_eq!(call(&pool, &addr).await.unwrap(), "");
        // On the reused connection: the request went out, so it fails, once.
        assert_eq!(pool.send(get(&addr, "/a")).await.err(), Some(PoolError::Failed));
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_listener_is_a_connect_error() {
        // A port held (bound, not listening) so no other test can take it: refused.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let unused = held.local_addr().unwrap().to_string();
        let pool = Http1Pool::new(limits());
        assert_eq!(pool.send(get(&unused, "/")).await.err(), Some(PoolError::Connect));
    }

    #[tokio::test]
    async fn names_and_ipv6_literals_are_connected_to() {
        // On the address `localhost` names first, which the connector tries first.
        let first = tokio::net::lookup_host("localhost:0").await.unwrap().next().unwrap();
        let o = origin_on(TcpListener::bind(first).await.unwrap(), usize::MAX, Duration::ZERO);
        let port = o.addr.rsplit(':').next().unwrap();
        let pool = Http1Pool::new(limits());
        assert_eq!(call(&pool, &format!("localhost:{port}")).await.unwrap(), "/v1/models");
        let head = o.heads.lock().unwrap().last().unwrap().to_ascii_lowercase();
        assert!(head.contains(&format!("\r\nhost: localhost:{port}\r\n")), "{head}");
        match TcpListener::bind("[::1]:0").await {
            Ok(listener) => {
                let v6 = origin_on(listener, usize::MAX, Duration::ZERO);
                assert_eq!(call(&pool, &v6.addr).await.unwrap(), "/v1/models");
                let head = v6.heads.lock().unwrap().last().unwrap().to_ascii_lowercase();
                assert!(
                    head.contains(&format!("\r\nhost: {}\r\n", v6.addr)) && v6.addr.starts_with("[::1]:"),
                    "{head}"
                );
            }
            Err(e) => eprintln!("SKIP the IPv6 half: no IPv6 loopback here ({e})"),
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(Limits { idle_timeout: Duration::from_millis(200), ..limits() });
        call(&pool, &o.addr).await.unwrap();
        assert_eq!(pool.idle(&o.addr), 1);
        // Nobody calls again: the sweep closes it, and the origin sees it go.
        eventually("the idle connection's close", || o.closed.load(Ordering::SeqCst) == 1).await;
        assert_eq!(pool.idle(&o.addr), 0);
        assert_eq!(call(&pool, &o.addr).await.unwrap(), "/v1/models");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_expired_connection_is_never_taken() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        call(&pool, &o.addr).await.unwrap();
        let slot = pool.inner.slot(&o.addr.parse().unwrap());
        // Taken at a moment past its idle timeout (before any sweep could run): dropped.
        assert!(pool.inner.take(&slot, Instant::now() + limits().idle_timeout).is_none());
        assert_eq!(pool.idle(&o.addr), 0);
        eventually("the expired connection's close", || o.closed.load(Ordering::SeqCst) == 1).await;
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept_per_origin() {
        let o = origin(usize::MAX, Duration::from_millis(100)).await;
        let pool = Http1Pool::new(Limits { max_idle: 2, ..limits() });
        let calls: Vec<_> = (0..5).map(|_| call(&pool, &o.addr)).collect();
        for answer in futures_util::future::join_all(calls).await {
            assert_eq!(answer.unwrap(), "/v1/models");
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 5);
        assert_eq!(pool.idle(&o.addr), 2);
        eventually("three closes", || o.closed.load(Ordering::SeqCst) == 3).await;
    }

    #[tokio::test]
    async fn a_call_given_up_on_takes_its_connection_and_its_late_answer_with_it() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        call(&pool, &o.addr).await.unwrap();
        // The read timeout gives up on the call on the one idle connection.
        assert!(tokio::time::timeout(Duration::from_millis(100), pool.send(get(&o.addr, "/slow"))).await.is_err());
        assert_eq!(pool.idle(&o.addr), 0);
        // The next call gets its own answer on a new connection, not the late one.
        assert_eq!(call(&pool, &o.addr).await.unwrap(), "/v1/models");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_idle_list_makes_room_by_what_has_closed() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(Limits { max_idle: 1, ..limits() });
        // Two calls at once: `/last` is answered at once on a connection the origin then
        // closes; `/wait` a moment later. The first fills the one idle place; by the time
        // the second comes back, that one has closed and gives its place up.
        let (last, wait) = tokio::join!(call_path(&pool, &o.addr, "/last"), call_path(&pool, &o.addr, "/wait"));
        assert_eq!((last.unwrap().as_str(), wait.unwrap().as_str()), ("/last", "/wait"));
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle(&o.addr), 1);
        // The next call goes out on `/wait`'s connection.
        assert_eq!(call(&pool, &o.addr).await.unwrap(), "/v1/models");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_cut_short_closes_its_connection_and_the_next_call_opens_another() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        // One chunk read of a body that goes on, then dropped, as by a caller who left.
        let (response, lease) = pool.send(get(&o.addr, "/stream")).await.unwrap();
        let mut body = response.into_body();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "first");
        drop(body);
        drop(lease);
        assert_eq!(call(&pool, &o.addr).await.unwrap(), "/v1/models");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
        eventually("the cut connection's close", || o.closed.load(Ordering::SeqCst) == 1).await;
    }

    #[tokio::test]
    async fn answers_without_a_body_keep_their_connection() {
        let o = origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(limits());
        for _ in 0..3 {
            let (response, lease) = pool.send(get(&o.addr, "/no-content")).await.unwrap();
            assert_eq!(response.status(), 204);
            drop(response);
            drop(lease);
        }
        assert_eq!(call(&pool, &o.addr).await.unwrap(), "/v1/models");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn host_is_the_authority_without_port_80() {
        let host = |a: &str| host_header(&a.parse().unwrap()).map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(host("127.0.0.1:8081").as_deref(), Some("127.0.0.1:8081"));
        assert_eq!(host("models.internal:80").as_deref(), Some("models.internal"));
        assert_eq!(host("models.internal").as_deref(), Some("models.internal"));
        assert_eq!(host("[::1]:11434").as_deref(), Some("[::1]:11434"));
    }
}
