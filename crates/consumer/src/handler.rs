//! [`Handler`]: what the consumer calls for each record, and [`Router`], a handler that
//! decodes a record and hands it to the handler registered for its type.

use std::{collections::HashMap, fmt, future::Future, pin::Pin, sync::Arc};

use crate::{Record, metric};

/// An error a handler returns, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a record was not handled, which decides what happens to it.
#[derive(Debug)]
pub enum Failure {
    /// Worth trying again, the record may be at fault (a deadlock, a timeout of its
    /// statement): retried with backoff up to the attempts allowed, then dead-lettered.
    Transient(BoxError),
    /// A dependency is down (the database or a remote service does not answer): not the
    /// record's fault, so it is retried with backoff (up to the longest delay) for as long
    /// as it takes, and never dead-lettered. Only its key waits.
    Unavailable(BoxError),
    /// Trying again cannot help (the record breaks a rule, it cannot be decoded):
    /// dead-lettered at once.
    Permanent(BoxError),
}

impl Failure {
    /// A failure worth retrying.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// A dependency that does not answer: retried until it does.
    pub fn unavailable(error: impl Into<BoxError>) -> Self {
        Self::Unavailable(error.into())
    }

    /// A failure no retry can mend.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// Whether a retry may help (a transient failure, or a dependency unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Unavailable(_))
    }

    /// Whether a dependency is down: retried without a limit of attempts.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, error) = match self {
            Self::Transient(e) => ("transient", e),
            Self::Unavailable(e) => ("unavailable", e),
            Self::Permanent(e) => ("permanent", e),
        };
        write!(f, "{kind}: {error}")?;
        let mut source = error.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Handles one record. Called concurrently for records of different keys, never for
/// two records of one key at once, and for one key's records in their order. A record
/// may be handled more than once (after a crash, a rebalance, a retry): make the effect
/// idempotent, for example with [`crate::inbox::claim`] in the effect's transaction.
pub trait Handler: Send + Sync + 'static {
    /// Handles `record`; `Ok` once its effect is durable.
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), Failure>> + Send;
}

impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), Failure>> + Send {
        (**self).handle(record)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Route<M> = Box<dyn for<'a> Fn(&'a Record, M) -> BoxFuture<'a, Result<(), Failure>> + Send + Sync>;
type Decode<M> = Box<dyn Fn(&Record) -> Result<Decoded<M>, String> + Send + Sync>;

/// A record decoded by a [`Router`]'s decoder: its type name and its message.
#[derive(Debug)]
pub struct Decoded<M> {
    /// The name handlers are registered under (an event type).
    pub kind: String,
    /// The decoded message.
    pub message: M,
}

/// A handler that decodes each record and calls the handler registered for its type.
/// A record that cannot be decoded is a [`Failure::Permanent`] (it is dead-lettered); a
/// type with no handler is counted (`consumer_unrouted_total`) and acknowledged.
pub struct Router<M> {
    decode: Decode<M>,
    routes: HashMap<String, Route<M>>,
}

impl<M> fmt::Debug for Router<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes.keys().collect::<Vec<_>>()).finish()
    }
}

impl<M: Send + 'static> Router<M> {
    /// A router with no routes yet, decoding records with `decode` (an `Err` says why the
    /// record cannot be decoded).
    pub fn new(decode: impl Fn(&Record) -> Result<Decoded<M>, String> + Send + Sync + 'static) -> Self {
        Self { decode: Box::new(decode), routes: HashMap::new() }
    }

    /// Registers `handler` for records of type `kind` (replacing an earlier one).
    pub fn on<F, Fut>(mut self, kind: impl Into<String>, handler: F) -> Self
    where
        F: Fn(&Record, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        self.routes.insert(kind.into(), Box::new(move |record, message| Box::pin(handler(record, message))));
        self
    }

    /// The types that have a handler.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

impl<M: Send + 'static> Handler for Router<M> {
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), Failure>> + Send {
        let routed = match (self.decode)(record) {
            Err(reason) => Err(Failure::permanent(format!("undecodable record: {reason}"))),
            Ok(Decoded { kind, message }) => match self.routes.get(&kind) {
                Some(route) => Ok(Some(route(record, message))),
                None => {
                    metrics::counter!(metric::UNROUTED, "kind" => kind).increment(1);
                    Ok(None)
                }
            },
        };
        async move {
            match routed? {
                Some(handled) => handled.await,
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn record(payload: &str) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: Some(b"k".to_vec()),
            payload: Some(payload.as_bytes().to_vec()),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }

    fn router(calls: &Arc<AtomicUsize>) -> Router<String> {
        let calls = Arc::clone(calls);
        Router::new(|record: &Record| {
            let text = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let (kind, rest) = text.split_once(':').ok_or("no kind")?;
            Ok(Decoded { kind: kind.to_string(), message: rest.to_string() })
        })
        .on("paid", move |_record: &Record, message: String| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if message == "bad" { Err(Failure::permanent("bad payment")) } else { Ok(()) }
            }
        })
    }

    #[tokio::test]
    async fn records_go_to_the_handler_of_their_kind() {
        let calls = Arc::new(AtomicUsize::new(0));
        let router = router(&calls);
        assert!(router.handle(&record("paid:ok")).await.is_ok());
        assert!(router.handle(&record("paid:bad")).await.is_err_and(|f| !f.is_transient()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_kind_without_handler_is_acknowledged_and_garbage_is_permanent() {
        let calls = Arc::new(AtomicUsize::new(0));
        let router = router(&calls);
        assert!(router.handle(&record("shipped:x")).await.is_ok());
        let failure = router.handle(&record("garbage")).await.expect_err("undecodable");
        assert!(!failure.is_transient());
        assert!(failure.to_string().contains("undecodable record: no kind"), "{failure}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
