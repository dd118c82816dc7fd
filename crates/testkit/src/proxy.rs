//! TCP proxies a test can cut and restore: a dependency goes "down" for the clients
//! that go through the proxy, while the shared server keeps serving every other test.
//!
//! - [`TcpProxy::start`] forwards bytes as they are; enough for PostgreSQL, whose
//!   clients only ever use the address they were given.
//! - [`TcpProxy::kafka`] also rewrites the broker addresses in Kafka `Metadata`
//!   responses to its own: a Kafka client bootstraps through the proxy, learns the
//!   brokers' advertised addresses from metadata and would otherwise connect to them
//!   directly, bypassing the proxy. Every broker is mapped to the proxy's one upstream,
//!   which is right for the one-broker local cluster of `make up`. Brokers name their
//!   addresses in two more places since KIP-951: the `NodeEndpoints` of `Produce`
//!   (v10+) and `Fetch` (v16+) responses that say a partition's leader moved. A client
//!   that gets one (the first produce to a fresh topic often does) connects there
//!   directly from then on; so the proxy lowers the versions of those two APIs that
//!   the broker offers in its `ApiVersions` response to the last ones without them.
//!
//! [`TcpProxy::cut`] closes every proxied connection and stops listening (new
//! connections are refused), which is what a client sees when its server is stopped;
//! [`TcpProxy::restore`] listens again on the same port.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// A proxy from a local port to `upstream`; cut when dropped.
#[derive(Debug, Clone)]
pub struct TcpProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    upstream: SocketAddr,
    kafka: bool,
    /// The accept loop and every connection; dropping the set aborts them all.
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl TcpProxy {
    /// A byte-for-byte proxy to `upstream`, listening on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::new(upstream, false).await
    }

    /// A proxy to the Kafka broker at `upstream` that also points the broker addresses
    /// of `Metadata` responses at itself.
    pub async fn kafka(upstream: SocketAddr) -> Self {
        Self::new(upstream, true).await
    }

    async fn new(upstream: SocketAddr, kafka: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a proxy port: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("no proxy address: {e}"));
        let proxy = Self { inner: Arc::new(Inner { addr, upstream, kafka, tasks: Mutex::new(None) }) };
        proxy.listen(listener);
        proxy
    }

    /// The address clients should use.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Closes every connection and stops listening.
    pub fn cut(&self) {
        let tasks = self.inner.tasks.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(tasks);
    }

    /// Listens again on the same port (after [`TcpProxy::cut`]).
    ///
    /// # Panics
    /// When the port cannot be bound again within a few seconds.
    pub async fn restore(&self) {
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(self.inner.addr).await {
                Ok(listener) => break listener,
                Err(e) if attempt >= 50 => panic!("cannot listen on {} again: {e}", self.inner.addr),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.listen(listener);
    }

    fn listen(&self, listener: TcpListener) {
        let mut set = JoinSet::new();
        let inner = Arc::downgrade(&self.inner);
        set.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Some(inner) = inner.upgrade() else { return };
                let (upstream, kafka, addr) = (inner.upstream, inner.kafka, inner.addr);
                let connection = async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    if kafka {
                        forward_kafka(client, server, addr).await;
                    } else {
                        let (mut client, mut server) = (client, server);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                };
                if let Some(set) = inner.tasks.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    set.spawn(connection);
                }
            }
        });
        *self.inner.tasks.lock().unwrap_or_else(PoisonError::into_inner) = Some(set);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        drop(tasks);
    }
}

/// The Kafka API keys the proxy rewrites or limits.
const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;

/// The highest versions of `Produce` and `Fetch` whose responses name no broker
/// address (KIP-951 added `NodeEndpoints` in the next ones).
const PRODUCE_MAX: i16 = 9;
const FETCH_MAX: i16 = 15;

/// A request in flight whose response the proxy rewrites.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    Metadata(i16),
    ApiVersions(i16),
}

/// Forwards Kafka frames both ways, rewriting `Metadata` responses.
async fn forward_kafka(client: TcpStream, server: TcpStream, proxy: SocketAddr) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // Correlation id -> the rewrite of the response to each request in flight on this
    // connection that needs one.
    let rewrites: Arc<Mutex<HashMap<i32, Rewrite>>> = Arc::default();
    let requests = {
        let rewrites = Arc::clone(&rewrites);
        async move {
            while let Some(frame) = read_frame(&mut client_rx).await {
                if let (Some(key), Some(version), Some(correlation)) =
                    (be_i16(&frame, 0), be_i16(&frame, 2), be_i32(&frame, 4))
                {
                    let rewrite = match key {
                        METADATA => Some(Rewrite::Metadata(version)),
                        API_VERSIONS => Some(Rewrite::ApiVersions(version)),
                        _ => None,
                    };
                    if let Some(rewrite) = rewrite {
                        rewrites.lock().unwrap_or_else(PoisonError::into_inner).insert(correlation, rewrite);
                    }
                }
                if write_frame(&mut server_tx, &frame).await.is_err() {
                    return;
                }
            }
        }
    };
    let responses = async move {
        let host = proxy.ip().to_string();
        let port = i32::from(proxy.port());
        while let Some(mut frame) = read_frame(&mut server_rx).await {
            let rewrite = be_i32(&frame, 0)
                .and_then(|c| rewrites.lock().unwrap_or_else(PoisonError::into_inner).remove(&c));
            match rewrite {
                Some(Rewrite::Metadata(version)) => {
                    if let Some(rewritten) = rewrite_metadata(&frame, version, &host, port) {
                        frame = rewritten;
                    }
                }
                Some(Rewrite::ApiVersions(version)) => limit_api_versions(&mut frame, version),
                None => {}
            }
            if write_frame(&mut client_tx, &frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = responses => {}
    }
}

async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let len = usize::try_from(stream.read_i32().await.ok()?).ok()?;
    let mut frame = vec![0; len];
    stream.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

async fn write_frame(stream: &mut (impl AsyncWriteExt + Unpin), frame: &[u8]) -> std::io::Result<()> {
    let len = i32::try_from(frame.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out).await
}

fn be_i16(buf: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// A cursor over a Kafka message, for the few types the rewrite needs.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        (self.pos + n <= self.buf.len()).then(|| self.pos += n)
    }

    fn i16(&mut self) -> Option<i16> {
        let v = be_i16(self.buf, self.pos)?;
        self.pos += 2;
        Some(v)
    }

    fn i32(&mut self) -> Option<i32> {
        let v = be_i32(self.buf, self.pos)?;
        self.pos += 4;
        Some(v)
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A string (`compact`: unsigned-varint length + 1; else int16 length, -1 for null).
    fn skip_string(&mut self, compact: bool) -> Option<()> {
        let len = if compact { self.uvarint()?.checked_sub(1) } else { u64::try_from(self.i16()?).ok() };
        match len {
            Some(len) => self.skip(usize::try_from(len).ok()?),
            None => Some(()), // null
        }
    }

    fn skip_tagged_fields(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(usize::try_from(size).ok()?)?;
        }
        Some(())
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The `Metadata` response `frame` (of request version `version`, starting at the
/// correlation id) with every broker's host and port replaced; `None` when it cannot
/// be parsed (it is then forwarded as it is).
fn rewrite_metadata(frame: &[u8], version: i16, host: &str, port: i32) -> Option<Vec<u8>> {
    let flexible = version >= 9;
    let mut r = Reader { buf: frame, pos: 0 };
    r.skip(4)?; // correlation id
    if flexible {
        r.skip_tagged_fields()?; // response header v1
    }
    if version >= 3 {
        r.skip(4)?; // throttle_time_ms
    }
    let mut out = frame[..r.pos].to_vec();
    let count = if flexible {
        let raw = r.uvarint()?;
        put_uvarint(&mut out, raw);
        raw.saturating_sub(1)
    } else {
        let n = r.i32()?;
        out.extend_from_slice(&n.to_be_bytes());
        u64::try_from(n).unwrap_or(0)
    };
    for _ in 0..count {
        let node = r.i32()?;
        r.skip_string(flexible)?;
        r.i32()?; // port
        let rest = r.pos;
        if version >= 1 {
            r.skip_string(flexible)?; // rack
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
        out.extend_from_slice(&node.to_be_bytes());
        if flexible {
            put_uvarint(&mut out, host.len() as u64 + 1);
        } else {
            out.extend_from_slice(&i16::try_from(host.len()).ok()?.to_be_bytes());
        }
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&frame[rest..r.pos]);
    }
    out.extend_from_slice(&frame[r.pos..]);
    Some(out)
}

/// Lowers, in the `ApiVersions` response `frame` (of request version `version`,
/// starting at the correlation id), the highest versions of `Produce` and `Fetch` to
/// [`PRODUCE_MAX`] and [`FETCH_MAX`]. Left as it is when it cannot be parsed. The
/// response header is v0 at every version (no tagged fields), and the entries keep
/// their size, so the frame is edited in place.
fn limit_api_versions(frame: &mut [u8], version: i16) {
    let flexible = version >= 3;
    let mut r = Reader { buf: frame, pos: 0 };
    let mut limits = Vec::new();
    let parsed = (|| {
        r.skip(4)?; // correlation id
        r.skip(2)?; // error_code
        let count = if flexible { r.uvarint()?.checked_sub(1)? } else { u64::try_from(r.i32()?).ok()? };
        for _ in 0..count {
            let key = r.i16()?;
            r.skip(2)?; // min_version
            let at = r.pos;
            let max = r.i16()?;
            if flexible {
                r.skip_tagged_fields()?;
            }
            let limit = match key {
                PRODUCE => PRODUCE_MAX,
                FETCH => FETCH_MAX,
                _ => continue,
            };
            if max > limit {
                limits.push((at, limit));
            }
        }
        Some(())
    })();
    if parsed.is_some() {
        for (at, limit) in limits {
            frame[at..at + 2].copy_from_slice(&limit.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_uvarint(&mut out, s.len() as u64 + 1);
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn flexible_metadata_brokers_point_at_the_proxy() {
        let mut frame = 7i32.to_be_bytes().to_vec(); // correlation id
        frame.push(0); // header tagged fields
        frame.extend_from_slice(&0i32.to_be_bytes()); // throttle
        frame.push(2); // one broker
        frame.extend_from_slice(&1i32.to_be_bytes());
        frame.extend(compact("broker.example"));
        frame.extend_from_slice(&9092i32.to_be_bytes());
        frame.push(0); // null rack
        frame.push(0); // broker tagged fields
        frame.extend_from_slice(b"rest of the response");
        let out = rewrite_metadata(&frame, 12, "127.0.0.1", 40000).expect("parses");
        let mut expected = 7i32.to_be_bytes().to_vec();
        expected.push(0);
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.push(2);
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend(compact("127.0.0.1"));
        expected.extend_from_slice(&40000i32.to_be_bytes());
        expected.extend_from_slice(&[0, 0]);
        expected.extend_from_slice(b"rest of the response");
        assert_eq!(out, expected);
    }

    #[test]
    fn classic_metadata_brokers_point_at_the_proxy() {
        let mut frame = 3i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&1i32.to_be_bytes()); // one broker
        frame.extend_from_slice(&5i32.to_be_bytes());
        frame.extend_from_slice(&4i16.to_be_bytes());
        frame.extend_from_slice(b"kafk");
        frame.extend_from_slice(&9092i32.to_be_bytes());
        frame.extend_from_slice(&(-1i16).to_be_bytes()); // null rack
        frame.extend_from_slice(b"tail");
        let out = rewrite_metadata(&frame, 1, "127.0.0.1", 1234).expect("parses");
        let mut expected = 3i32.to_be_bytes().to_vec();
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&5i32.to_be_bytes());
        expected.extend_from_slice(&9i16.to_be_bytes());
        expected.extend_from_slice(b"127.0.0.1");
        expected.extend_from_slice(&1234i32.to_be_bytes());
        expected.extend_from_slice(&(-1i16).to_be_bytes());
        expected.extend_from_slice(b"tail");
        assert_eq!(out, expected);
    }

    #[test]
    fn api_versions_offer_no_produce_or_fetch_version_that_names_brokers() {
        let entry = |key: i16, min: i16, max: i16| {
            let mut out = key.to_be_bytes().to_vec();
            out.extend_from_slice(&min.to_be_bytes());
            out.extend_from_slice(&max.to_be_bytes());
            out.push(0); // tagged fields
            out
        };
        let response = |produce: i16, fetch: i16| {
            let mut frame = 9i32.to_be_bytes().to_vec(); // correlation id
            frame.extend_from_slice(&0i16.to_be_bytes()); // error_code
            frame.push(4); // three entries
            frame.extend(entry(PRODUCE, 3, produce));
            frame.extend(entry(FETCH, 4, fetch));
            frame.extend(entry(METADATA, 0, 13));
            frame.extend_from_slice(&0i32.to_be_bytes()); // throttle
            frame.push(0); // tagged fields
            frame
        };
        let mut frame = response(12, 17);
        limit_api_versions(&mut frame, 3);
        assert_eq!(frame, response(PRODUCE_MAX, FETCH_MAX));
        let mut old = response(8, 11);
        limit_api_versions(&mut old, 3);
        assert_eq!(old, response(8, 11), "lower versions are left as they are");

        let mut classic = 5i32.to_be_bytes().to_vec();
        classic.extend_from_slice(&0i16.to_be_bytes());
        classic.extend_from_slice(&1i32.to_be_bytes());
        classic.extend_from_slice(&[0, 0, 0, 0, 0, 11]); // Produce 0..=11
        limit_api_versions(&mut classic, 2);
        assert_eq!(&classic[classic.len() - 2..], &PRODUCE_MAX.to_be_bytes());
    }

    #[tokio::test]
    async fn a_cut_proxy_refuses_and_a_restored_one_forwards() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut rx, mut tx) = socket.split();
                    let _ = tokio::io::copy(&mut rx, &mut tx).await;
                });
            }
        });
        let proxy = TcpProxy::start(upstream).await;
        let roundtrip = || async {
            let mut stream = TcpStream::connect(proxy.addr()).await.ok()?;
            stream.write_all(b"ping").await.ok()?;
            let mut buf = [0; 4];
            stream.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        assert_eq!(roundtrip().await, Some(*b"ping"));
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(roundtrip().await, None);
        proxy.restore().await;
        assert_eq!(roundtrip().await, Some(*b"ping"));
    }
}
