//! A PostgreSQL proxy that can lose the answer to a `COMMIT`: the server commits, the
//! client only sees its connection break. That is the case a writer cannot tell from
//! a failed commit by looking at the error, and must settle another way.
//!
//! [`PgProxy::lose_next_commit_answer`] arms it: the next simple-query `COMMIT` sent
//! through the proxy is forwarded to the server, and then that connection is closed
//! before any answer goes back. Every other byte is forwarded as it is; other
//! connections are not touched.
//!
//! [`PgProxy::go_down`] plays an outage: every proxied connection is closed, and each
//! new one is accepted and closed at once (and counted, see
//! [`PgProxy::attempts_while_down`]), until [`PgProxy::come_back`].

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    task::{JoinHandle, JoinSet},
};

/// A proxy to one PostgreSQL server; stops when dropped.
#[derive(Debug)]
pub struct PgProxy {
    addr: SocketAddr,
    url: String,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    armed: AtomicBool,
    lost: AtomicUsize,
    down: AtomicBool,
    attempts_while_down: AtomicUsize,
    connections: Mutex<JoinSet<()>>,
}

impl State {
    fn connections(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PgProxy {
    /// A proxy to the server of `database_url` (`postgres://user@host:port/db`).
    ///
    /// # Panics
    /// When the URL names no `host:port` or the server's address cannot be resolved.
    pub async fn start(database_url: &str) -> Self {
        let (prefix, rest) =
            database_url.split_once("://").unwrap_or_else(|| panic!("not a postgres:// URL: {database_url}"));
        let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
        let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = tokio::net::lookup_host(host_port)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("cannot resolve the server of {database_url}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a proxy port: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("no proxy address: {e}"));
        let at = if user.is_empty() { String::new() } else { format!("{user}@") };
        let url = format!("{prefix}://{at}{addr}/{path}");
        let state = Arc::new(State::default());
        let accept = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if state.down.load(Ordering::SeqCst) {
                        state.attempts_while_down.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                    let connection = {
                        let state = Arc::clone(&state);
                        async move {
                            if let Ok(server) = TcpStream::connect(upstream).await {
                                forward(client, server, &state).await;
                            }
                        }
                    };
                    state.connections().spawn(connection);
                }
            }
        });
        Self { addr, url, state, accept }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database URL, pointed at the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Arms the proxy: the next `COMMIT` reaches the server, its answer never
    /// reaches the client, whose connection is closed.
    pub fn lose_next_commit_answer(&self) {
        self.state.armed.store(true, Ordering::SeqCst);
    }

    /// Takes the server "down" for the proxy's clients: closes every connection, and
    /// closes each new one as soon as it is accepted.
    pub fn go_down(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.state.connections().abort_all();
    }

    /// Ends [`PgProxy::go_down`]: new connections are forwarded again.
    pub fn come_back(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }

    /// Connections attempted while the proxy was down.
    pub fn attempts_while_down(&self) -> usize {
        self.state.attempts_while_down.load(Ordering::SeqCst)
    }

    /// How many commit answers were lost so far.
    pub fn commit_answers_lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.connections().abort_all();
    }
}

/// Codes of the untyped requests a client may send before its startup message.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

async fn forward(client: TcpStream, server: TcpStream, state: &State) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, client_tx) = client.into_split();
    let (server_rx, mut server_tx) = server.into_split();
    // Aborted with this task too (when the proxy goes down), so the client sees EOF.
    let mut answers = AbortOnDrop(tokio::spawn(copy(server_rx, client_tx)));
    // Untyped messages first: optional SSL/GSS requests, then the startup message.
    loop {
        let Some(message) = read_untyped(&mut client_rx).await else { break };
        if server_tx.write_all(&message).await.is_err() {
            break;
        }
        let code = message.get(4..8).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes);
        if code != Some(SSL_REQUEST) && code != Some(GSSENC_REQUEST) {
            break;
        }
    }
    while let Some(message) = read_typed(&mut client_rx).await {
        let commit = message[0] == b'Q' && is_commit(&message[5..]);
        if commit && state.armed.swap(false, Ordering::SeqCst) {
            // No answer may pass from here on: stop the way back first.
            answers.0.abort();
            let _ = (&mut answers.0).await;
            let _ = server_tx.write_all(&message).await;
            let _ = server_tx.flush().await;
            state.lost.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if server_tx.write_all(&message).await.is_err() {
            break;
        }
    }
    answers.0.abort();
}

/// A task aborted when this handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_commit(query: &[u8]) -> bool {
    let text = String::from_utf8_lossy(query);
    let text = text.trim_end_matches('\0').trim().trim_end_matches(';').trim();
    text.eq_ignore_ascii_case("COMMIT") || text.eq_ignore_ascii_case("END")
}

async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A message without a type byte: length (itself included), then the body.
async fn read_untyped(stream: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let len = usize::try_from(stream.read_i32().await.ok()?).ok()?;
    let mut message = vec![0; len.max(4)];
    message[..4].copy_from_slice(&i32::try_from(len).ok()?.to_be_bytes());
    stream.read_exact(&mut message[4..]).await.ok()?;
    Some(message)
}

/// A message with a type byte, then the length (itself included), then the body.
async fn read_typed(stream: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let kind = stream.read_u8().await.ok()?;
    let len = usize::try_from(stream.read_i32().await.ok()?).ok()?;
    let mut message = vec![0; 1 + len.max(4)];
    message[0] = kind;
    message[1..5].copy_from_slice(&i32::try_from(len).ok()?.to_be_bytes());
    stream.read_exact(&mut message[5..]).await.ok()?;
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::is_commit;

    #[test]
    fn commit_is_recognised_in_its_spellings() {
        assert!(is_commit(b"COMMIT\0"));
        assert!(is_commit(b" commit;\0"));
        assert!(!is_commit(b"COMMIT PREPARED 'x'\0"));
        assert!(!is_commit(b"SELECT 1\0"));
    }
}
