//! [`EventSender`]: how a long-lived task reports to the daemon core
//! without naming the core's event type.
//!
//! Each task (download, monitor, ping, discovery) defines its own event
//! enum and is handed an `EventSender` of *that* type; the core wraps it
//! into its own event with a `From` impl. Dependencies so point one way:
//! the core knows the tasks, no task knows the core (a tidy test,
//! `daemon/tests/tidy.rs`, holds that). This module must not know any
//! task's or the core's types.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

/// The receiving side is gone: the daemon is shutting down and nobody
/// needs the event any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the daemon core is gone")]
pub struct CoreGone;

/// A cloneable sender of one task's events `E` into the core's inbox.
pub struct EventSender<E> {
    inbox: Arc<dyn Inbox<E>>,
}

impl<E> Clone for EventSender<E> {
    fn clone(&self) -> Self {
        Self {
            inbox: Arc::clone(&self.inbox),
        }
    }
}

impl<E> std::fmt::Debug for EventSender<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSender")
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E: Send + 'static> EventSender<E> {
    /// Sends into `inbox`, converting each event with `T::from`. The inbox
    /// is bounded, so a task that outruns the core waits (back-pressure).
    pub fn new<T: From<E> + Send + 'static>(inbox: mpsc::Sender<T>) -> Self {
        Self {
            inbox: Arc::new(inbox),
        }
    }

    /// Sends `event`, waiting while the inbox is full.
    pub async fn send(&self, event: E) -> Result<(), CoreGone> {
        self.inbox.send(event).await
    }

    /// Sends `event` from a blocking thread (never from async code).
    pub fn blocking_send(&self, event: E) -> Result<(), CoreGone> {
        self.inbox.blocking_send(event)
    }
}

/// The type-erased inbox behind an [`EventSender`].
trait Inbox<E>: Send + Sync {
    fn send(&self, event: E) -> Pin<Box<dyn Future<Output = Result<(), CoreGone>> + Send + '_>>;
    fn blocking_send(&self, event: E) -> Result<(), CoreGone>;
}

impl<E: Send + 'static, T: From<E> + Send + 'static> Inbox<E> for mpsc::Sender<T> {
    fn send(&self, event: E) -> Pin<Box<dyn Future<Output = Result<(), CoreGone>> + Send + '_>> {
        let event = T::from(event);
        Box::pin(async move { mpsc::Sender::send(self, event).await.map_err(|_| CoreGone) })
    }

    fn blocking_send(&self, event: E) -> Result<(), CoreGone> {
        mpsc::Sender::blocking_send(self, T::from(event)).map_err(|_| CoreGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Task(u32);

    #[derive(Debug, PartialEq)]
    enum Core {
        Task(Task),
    }

    impl From<Task> for Core {
        fn from(event: Task) -> Self {
            Self::Task(event)
        }
    }

    #[tokio::test]
    async fn events_arrive_wrapped_in_the_core_type_and_a_closed_inbox_is_reported() {
        let (tx, mut rx) = mpsc::channel::<Core>(4);
        let sender = EventSender::<Task>::new(tx);
        sender.send(Task(1)).await.unwrap();
        sender.clone().send(Task(2)).await.unwrap();
        assert_eq!(rx.recv().await, Some(Core::Task(Task(1))));
        assert_eq!(rx.recv().await, Some(Core::Task(Task(2))));
        drop(rx);
        assert_eq!(sender.send(Task(3)).await, Err(CoreGone));
    }
}
