//! A budget of bytes in flight: the stages size their concurrency by the work (many
//! small objects at once, few large ones) while their memory stays bounded by bytes, not
//! by the number of objects.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Granularity of the budget: permits are KiB, so a budget of terabytes still fits.
const UNIT: u64 = 1024;

/// Bytes that may be held at once by the tasks that take from it.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    permits: Semaphore,
    /// The whole budget, in units: what one holder takes at most.
    total: u32,
}

impl ByteBudget {
    /// A budget of `bytes`.
    pub(crate) fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        ByteBudget {
            permits: Semaphore::new(total as usize),
            total,
        }
    }

    /// Waits until `bytes` (at least one unit, at most the whole budget) are free and
    /// holds them until the returned guard is dropped.
    pub(crate) async fn hold(&self, bytes: u64) -> SemaphorePermit<'_> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        match self.permits.acquire_many(units).await {
            Ok(p) => p,
            // The semaphore is owned here and never closed.
            Err(_) => unreachable!("a ByteBudget's semaphore is never closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn holders_wait_for_bytes_and_a_huge_one_takes_the_whole_budget() {
        let b = ByteBudget::new(10 << 10);
        let a = b.hold(6 << 10).await;
        assert_eq!(b.permits.available_permits(), 4);
        // More than is free waits; dropping the first frees it.
        let waiting = b.hold(5 << 10);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(a);
        let c = waiting.await;
        assert_eq!(b.permits.available_permits(), 5);
        drop(c);
        // Larger than the budget: capped at the budget, so it never waits forever.
        let d = b.hold(1 << 40).await;
        assert_eq!(b.permits.available_permits(), 0);
        drop(d);
        // An empty object still counts one unit.
        let e = b.hold(0).await;
        assert_eq!(b.permits.available_permits(), 9);
        drop(e);
    }
}
