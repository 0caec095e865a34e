//! The worker's capacity: `--capacity` execution slots, and as many places
//! for runs whose child has finished but whose events are still being
//! delivered.
//!
//! A run holds a slot from its claim until its child has finished; then it
//! moves to a delivery place (waiting for one if all are taken) and gives
//! the slot back, so the next claim can start a child while the orchestrator
//! is still acknowledging the previous run's last events. At most
//! `capacity` runs execute and at most `capacity` more wait on delivery;
//! everything a delivering run still owes is already in the journal.

use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// The two semaphores, shared by the claim loop and every run.
#[derive(Clone)]
pub struct Capacity {
    slots: Arc<Semaphore>,
    delivery: Arc<Semaphore>,
    size: u32,
}

impl Capacity {
    pub fn new(capacity: u32) -> Capacity {
        Capacity {
            slots: Arc::new(Semaphore::new(capacity as usize)),
            delivery: Arc::new(Semaphore::new(capacity as usize)),
            size: capacity,
        }
    }

    /// Waits for a free execution slot.
    pub async fn slot(&self) -> Result<Hold, AcquireError> {
        let permit = self.slots.clone().acquire_owned().await?;
        Ok(self.hold(permit))
    }

    /// A free execution slot, if there is one now.
    pub fn try_slot(&self) -> Option<Hold> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.hold(permit))
    }

    fn hold(&self, slot: OwnedSemaphorePermit) -> Hold {
        Hold {
            slot: Some(slot),
            delivering: None,
            delivery: self.delivery.clone(),
        }
    }

    /// Resolves once no run executes or delivers (shutdown).
    pub async fn idle(&self) {
        // Slots first: a run gives its slot back only after it holds a
        // delivery place, so none slips between the two waits.
        let _ = self.slots.acquire_many(self.size).await;
        let _ = self.delivery.acquire_many(self.size).await;
    }
}

/// One run's hold on the capacity; dropping it frees whatever it holds.
pub struct Hold {
    slot: Option<OwnedSemaphorePermit>,
    delivering: Option<OwnedSemaphorePermit>,
    delivery: Arc<Semaphore>,
}

impl Hold {
    /// The run's child has finished: trade the execution slot for a
    /// delivery place (waiting while all are taken). Idempotent.
    pub async fn executed(&mut self) {
        if self.slot.is_none() {
            return;
        }
        if let Ok(p) = self.delivery.clone().acquire_owned().await {
            self.delivering = Some(p);
        }
        self.slot = None;
    }

    /// Whether the run still occupies an execution slot.
    pub fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_finished_run_frees_its_slot_for_a_delivery_place() {
        let c = Capacity::new(1);
        let mut first = c.slot().await.unwrap();
        assert!(c.try_slot().is_none(), "one slot, taken");
        first.executed().await;
        assert!(!first.holds_slot());
        let mut second = c
            .try_slot()
            .expect("the slot is free while the first delivers");
        // Both delivery places would be needed: the second waits for the first.
        let waiting = tokio::time::timeout(Duration::from_millis(50), second.executed()).await;
        assert!(
            waiting.is_err(),
            "no delivery place while the first delivers"
        );
        assert!(second.holds_slot());
        drop(first);
        second.executed().await;
        assert!(!second.holds_slot());
    }

    #[tokio::test]
    async fn idle_waits_for_executing_and_delivering_runs() {
        let c = Capacity::new(2);
        let mut delivering = c.slot().await.unwrap();
        delivering.executed().await;
        let executing = c.slot().await.unwrap();
        let idle = tokio::spawn({
            let c = c.clone();
            async move { c.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!idle.is_finished());
        drop(executing);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!idle.is_finished(), "a run is still delivering");
        drop(delivering);
        tokio::time::timeout(Duration::from_secs(1), idle)
            .await
            .expect("idle once both are done")
            .unwrap();
    }
}
