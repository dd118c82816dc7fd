//! The queue in front of group committers.
//!
//! Writers that share transactions (group commit) send their work to a queue that a
//! few committer tasks read. A free committer waits for one request, then takes every
//! request already queued behind it, up to a bound, and writes them together: batching
//! happens only when there is a queue, and a lone request is written at once.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use orders_postgres::group_commit::next_batch;
//! use tokio::sync::{Mutex, mpsc};
//!
//! let (queue, receiver) = mpsc::channel(16);
//! let receiver = Mutex::new(receiver);
//! for request in 1..=5 {
//!     queue.send(request).await.unwrap();
//! }
//! let (batch, still_queued) = next_batch(&receiver, 3).await.unwrap();
//! assert_eq!((batch, still_queued), (vec![1, 2, 3], 2));
//! # }
//! ```

use tokio::sync::{Mutex, mpsc};

/// Waits for one request on `receiver` (shared by the committers), then takes those
/// already queued behind it, up to `max` in all (at least one). The batch and how many
/// requests are still queued after it; `None` once every sender is gone.
pub async fn next_batch<T>(receiver: &Mutex<mpsc::Receiver<T>>, max: usize) -> Option<(Vec<T>, usize)> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some((batch, receiver.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_and_ends_with_the_senders() {
        let (queue, receiver) = mpsc::channel(8);
        let receiver = Mutex::new(receiver);
        queue.send("lone").await.expect("queued");
        assert_eq!(next_batch(&receiver, 0).await, Some((vec!["lone"], 0)), "at least one");
        for request in ["a", "b"] {
            queue.send(request).await.expect("queued");
        }
        drop(queue);
        assert_eq!(next_batch(&receiver, 10).await, Some((vec!["a", "b"], 0)));
        assert_eq!(next_batch(&receiver, 10).await, None);
    }
}
