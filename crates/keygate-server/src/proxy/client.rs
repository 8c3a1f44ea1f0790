//! The proxy's outbound client: keygate's own HTTP/1 pool for plain-HTTP origins
//! (`pool`), hyper's pooled client for HTTPS ones, both used directly. Each provider's
//! origin (scheme, host and port, base path) is parsed once at start; a call builds its
//! URI from those parts and the caller's already-checked path, with no URL parsing, no
//! IDNA, no proxy matching and no per-call client clone on the way (the figures are in
//! BENCHMARKS.md). Validation probes and OAuth2 token exchanges keep the general client
//! (`keygate_service::outbound`), whose cost does not matter.
//!
//! Like that client it never follows a redirect (a redirect is relayed to the caller),
//! speaks HTTP/1.1 or HTTP/2 as the provider's TLS handshake says, waits at most the
//! connect timeout for a connection and the read timeout between two reads of the
//! answer: a stream may run for minutes as long as it moves.

use super::pool::{Http1Pool, Lease, Limits, PoolError};
use axum::body::Bytes;
use axum::http::{uri, HeaderMap, Request, Response, StatusCode, Uri};
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate_core::catalog::{Catalog, Provider};
use keygate_core::fastmap::FastMap;
use std::fmt;
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
/// The HTTPS connector's builder once it knows which certificates it trusts.
type TlsBuilder = hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>;

/// An outbound connection unused this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle outbound connections kept per origin.
const MAX_IDLE: usize = 256;

/// Where a provider's calls go, parsed once.
#[derive(Debug, Clone)]
struct Origin {
    scheme: uri::Scheme,
    authority: uri::Authority,
    /// The base URL's path without its trailing `/` (often empty).
    base_path: String,
}

/// The pooled clients for every provider, and each provider's origin.
#[derive(Clone)]
pub(crate) struct ProxyClient {
    /// HTTPS origins (HTTP/1.1 or HTTP/2 as the TLS handshake says).
    client: Client<Connector, axum::body::Body>,
    /// Plain-HTTP origins (always HTTP/1.1).
    http1: Http1Pool,
    origins: FastMap<String, Origin>,
    read_timeout: Duration,
}

impl fmt::Debug for ProxyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyClient").field("providers", &self.origins.len()).finish()
    }
}

/// Why an outbound call got no answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection within the connect timeout, or refused.
    Connect,
    /// No answer within the read timeout.
    Timeout,
    /// The exchange broke off.
    Failed,
}

/// Why an answer's body broke off.
#[derive(Debug)]
pub(crate) enum BodyError {
    Timeout(Duration),
    Broken(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(t) => write!(f, "nothing was read for {} s", t.as_secs()),
            Self::Broken(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// What the stages after `send` read an answer's body as.
pub(crate) type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// A provider's answer: status and headers read, the body still to come.
pub(crate) struct Upstream {
    response: Response<Incoming>,
    read_timeout: Duration,
    /// The connection the answer arrives on, when keygate's own pool lent it: back to the
    /// pool when the body has been read (or dropped).
    lease: Option<Lease>,
}

impl Upstream {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The body's data as it arrives, each read within the read timeout (trailers are
    /// not relayed).
    pub fn bytes_stream(self) -> BodyStream {
        let read_timeout = self.read_timeout;
        let state = Some((self.response.into_body(), self.lease));
        // The lease lives in the stream's state: the connection goes back when the stream
        // ends or is dropped (hyper keeps a connection whose answer was cut short from
        // being taken again, so the order of the two drops does not matter).
        Box::pin(futures_util::stream::unfold(state, move |state| async move {
            let (mut body, lease) = state?;
            loop {
                match tokio::time::timeout(read_timeout, body.frame()).await {
                    Err(_) => return Some((Err(BodyError::Timeout(read_timeout)), None)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => return Some((Err(BodyError::Broken(e)), None)),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), Some((body, lease))));
                        }
                    }
                }
            }
        }))
    }
}

impl ProxyClient {
    /// A client for every provider in `catalog`.
    pub fn new(catalog: &Catalog, connect_timeout: Duration, read_timeout: Duration) -> Self {
        let tls = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots();
        Self::with_tls(catalog, connect_timeout, read_timeout, tls)
    }

    /// As [`ProxyClient::new`], with HTTPS origins trusted as `tls` says (the tests give a
    /// local certificate authority).
    fn with_tls(catalog: &Catalog, connect_timeout: Duration, read_timeout: Duration, tls: TlsBuilder) -> Self {
        let mut origins = FastMap::default();
        for p in catalog.all() {
            match origin(&p.base_url) {
                Ok(o) => {
                    origins.insert(p.id.clone(), o);
                }
                // Start-up already refused a base URL that is not a URL
                // (`keygate_service::outbound`): this is one `http::Uri` reads differently.
                Err(e) => tracing::error!(provider = %p.id, error = %e, "the provider's base URL cannot be proxied to"),
            }
        }
        let connector =
            tls.https_or_http().enable_http1().enable_http2().wrap_connector(super::pool::connector(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let http1 = Http1Pool::new(Limits { connect_timeout, idle_timeout: IDLE_TIMEOUT, max_idle: MAX_IDLE });
        Self { client, http1, origins, read_timeout }
    }

    /// The URI of `path_and_query` (already encoded, starting with `/` or not) at
    /// `provider`'s origin, below its base path.
    pub fn uri(&self, provider: &Provider, path: &str, query: &str) -> Result<Uri, String> {
        let origin = self.origins.get(&provider.id).ok_or_else(|| format!("no client for provider {}", provider.id))?;
        let mut pq = String::with_capacity(origin.base_path.len() + path.len() + query.len() + 2);
        pq.push_str(&origin.base_path);
        pq.push('/');
        pq.push_str(path.trim_start_matches('/'));
        if !query.is_empty() {
            pq.push('?');
            pq.push_str(query);
        }
        Uri::builder()
            .scheme(origin.scheme.clone())
            .authority(origin.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| format!("the provider path is not a valid URI: {e}"))
    }

    /// Sends `request`; the answer's status and headers within the read timeout.
    pub async fn send(&self, request: Request<axum::body::Body>) -> Result<Upstream, SendError> {
        let read_timeout = self.read_timeout;
        if request.uri().scheme() == Some(&uri::Scheme::HTTP) {
            return match tokio::time::timeout(read_timeout, self.http1.send(request)).await {
                Err(_) => Err(SendError::Timeout),
                Ok(Err(PoolError::Connect)) => Err(SendError::Connect),
                Ok(Err(PoolError::Failed)) => Err(SendError::Failed),
                Ok(Ok((response, lease))) => Ok(Upstream { response, read_timeout, lease: Some(lease) }),
            };
        }
        match tokio::time::timeout(read_timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect),
            Ok(Err(_)) => Err(SendError::Failed),
            Ok(Ok(response)) => Ok(Upstream { response, read_timeout, lease: None }),
        }
    }
}

fn origin(base_url: &str) -> Result<Origin, String> {
    // Read as a URL first, so an international host name arrives in its ASCII form.
    let url = reqwest::Url::parse(base_url).map_err(|e| format!("`{base_url}` is not a URL: {e}"))?;
    let uri: Uri = url.as_str().parse().map_err(|e| format!("`{base_url}` is not a URI: {e}"))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| format!("`{base_url}` has no scheme"))?;
    if scheme != uri::Scheme::HTTP && scheme != uri::Scheme::HTTPS {
        return Err(format!("`{base_url}` is neither http nor https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| format!("`{base_url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{base_url}` carries credentials"));
    }
    Ok(Origin { scheme, authority, base_path: uri.path().trim_end_matches('/').to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    #[test]
    fn origins_keep_their_base_path_and_refuse_what_is_not_a_url() {
        let o = origin("https://api.example.com/v1/").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.authority.as_str(), o.base_path.as_str()),
            ("https", "api.example.com", "/v1")
        );
        assert_eq!(origin("http://127.0.0.1:8081").unwrap().base_path, "");
        assert!(origin("ftp://example.com").is_err());
        assert!(origin("/relative").is_err());
        assert!(origin("https://user:pw@example.com").is_err());
    }

    #[tokio::test]
    async fn an_answer_read_through_its_stream_gives_its_connection_back() {
        use futures_util::StreamExt;
        let o = super::super::pool::tests::origin(usize::MAX, Duration::ZERO).await;
        let pool = Http1Pool::new(super::super::pool::tests::limits());
        for path in ["/first", "/second"] {
            let request = Request::builder().uri(format!("http://{}{path}", o.addr)).body(axum::body::Body::empty());
            let (response, lease) = pool.send(request.unwrap()).await.unwrap();
            let upstream = Upstream { response, read_timeout: Duration::from_secs(5), lease: Some(lease) };
            let mut stream = upstream.bytes_stream();
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(body, path.as_bytes());
            // Back as the stream ended, before the stream itself is dropped.
            assert_eq!(pool.idle(&o.addr), 1);
        }
        assert_eq!(o.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    const TEST_CA: &[u8] = include_bytes!("../../tests/fixtures/tls/ca.pem");

    /// An HTTPS origin on 127.0.0.1 with a certificate for `localhost` and `127.0.0.1` from
    /// the test-only authority (`tests/fixtures/tls`), offering `alpn`. Each answer names the protocol
    /// version it was asked in and its path; the count is of TCP connections accepted.
    async fn tls_origin(alpn: &[&[u8]]) -> (u16, Arc<AtomicUsize>) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain =
            vec![CertificateDer::from_pem_slice(include_bytes!("../../tests/fixtures/tls/localhost.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../tests/fixtures/tls/localhost.key")).unwrap();
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let answer = hyper::service::service_fn(|request: Request<Incoming>| async move {
                        let named = format!("{:?} {}", request.version(), request.uri().path());
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from(named))))
                    });
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, answer)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new().serve_connection(io, answer).await
                    };
                });
            }
        });
        (port, accepted)
    }

    async fn get(client: &ProxyClient, catalog: &Catalog) -> Result<String, SendError> {
        use futures_util::StreamExt;
        let uri = client.uri(catalog.get("openai").unwrap(), "models", "").unwrap();
        let upstream = client.send(Request::get(uri).body(axum::body::Body::empty()).unwrap()).await?;
        assert_eq!(upstream.status(), StatusCode::OK);
        let mut body = Vec::new();
        let mut stream = upstream.bytes_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        Ok(String::from_utf8(body).unwrap())
    }

    #[tokio::test]
    async fn https_origins_are_reached_over_tls_in_the_protocol_the_handshake_picks_and_untrusted_ones_refused() {
        let trusting_the_test_ca = || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::pem::PemObject::from_pem_slice(TEST_CA).unwrap()).unwrap();
            let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        };
        let timeout = Duration::from_secs(5);
        for (offered, version) in
            [(&[b"h2".as_slice(), b"http/1.1"][..], "HTTP/2.0"), (&[b"http/1.1".as_slice()][..], "HTTP/1.1")]
        {
            let (port, accepted) = tls_origin(offered).await;
            let mut catalog = Catalog::builtin().unwrap();
            catalog.set_base_url("openai", &format!("https://127.0.0.1:{port}/v1")).unwrap();
            let client = ProxyClient::with_tls(&catalog, timeout, timeout, trusting_the_test_ca());
            for _ in 0..3 {
                assert_eq!(get(&client, &catalog).await.unwrap(), format!("{version} /v1/models"));
            }
            if version == "HTTP/2.0" {
                // One HTTP/2 connection carries every call.
                assert_eq!(accepted.load(SeqCst), 1);
            }
            // The built-in roots do not know the test authority: the handshake fails and
            // nothing is asked.
            let untrusting = ProxyClient::new(&catalog, timeout, timeout);
            assert!(matches!(get(&untrusting, &catalog).await, Err(SendError::Connect)));
        }
    }
}
