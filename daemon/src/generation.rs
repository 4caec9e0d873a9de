//! A counter that grows whenever something this daemon's peers see of it
//! changes, and that can be waited on: the pinger tells every peer at once
//! (`docs/peer-protocol.md#liveness`) instead of peers polling for it.

use tokio::sync::watch;

/// A counter to bump and to watch.
#[derive(Debug)]
pub struct Generation(watch::Sender<u64>);

impl Default for Generation {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl Generation {
    /// Grows by one and wakes whoever watches.
    pub fn bump(&self) {
        self.0.send_modify(|generation| *generation += 1);
    }

    /// A receiver woken by every bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bump_wakes_a_watcher_and_grows_the_value() {
        let generation = Generation::default();
        let mut watcher = generation.subscribe();
        assert_eq!(*watcher.borrow_and_update(), 0);
        generation.bump();
        tokio::time::timeout(std::time::Duration::from_secs(1), watcher.changed())
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(*watcher.borrow_and_update(), 1);
    }
}
