//! Time budgets: a Lambda invocation must hand its remaining work on before it is killed.

use std::time::{Duration, Instant};

/// How much time an invocation has left. The Lambda adapter reads the context deadline; the local
/// runner and tests can also cap the number of pages so a "timeout" happens where they want it.
pub trait Budget: Send + Sync {
    /// True while there is time to do one more unit of work (a page) and still hand over cleanly.
    /// The first call of an invocation is always true, so every invocation makes progress even
    /// when its deadline is tight (otherwise a job could hand over forever without moving).
    fn has_time_for_more(&self) -> bool;

    /// When work must stop to leave the margin for handing over, if the budget knows (a long
    /// transfer passes it down so it stops between chunks rather than at a unit boundary).
    fn stop_at(&self) -> Option<Instant> {
        None
    }
}

/// A deadline minus a safety margin, optionally capped at a number of units of work.
#[derive(Debug)]
pub struct Deadline {
    deadline: Instant,
    margin: Duration,
    max_units: Option<u64>,
    used: std::sync::atomic::AtomicU64,
}

impl Deadline {
    /// `margin` is the time kept back to checkpoint and enqueue the continuation.
    pub fn new(deadline: Instant, margin: Duration) -> Self {
        Self {
            deadline,
            margin,
            max_units: None,
            used: Default::default(),
        }
    }

    /// A budget that never runs out of time (a CLI run), still honouring `max_units` when set.
    pub fn unlimited() -> Self {
        Self::new(
            Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600),
            Duration::ZERO,
        )
    }

    /// Stop after `units` units of work even if time remains (used to force continuations).
    pub fn with_max_units(mut self, units: Option<u64>) -> Self {
        self.max_units = units;
        self
    }
}

impl Budget for Deadline {
    fn has_time_for_more(&self) -> bool {
        let used = self.used.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if used == 0 {
            return true;
        }
        if self.max_units.is_some_and(|max| used >= max) {
            return false;
        }
        Instant::now() + self.margin < self.deadline
    }

    fn stop_at(&self) -> Option<Instant> {
        self.deadline.checked_sub(self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_cap_stops_after_the_given_number_of_pages() {
        let b = Deadline::unlimited().with_max_units(Some(2));
        assert!(b.has_time_for_more());
        assert!(b.has_time_for_more());
        assert!(!b.has_time_for_more());
    }

    #[test]
    fn margin_is_kept_back_before_the_deadline_after_the_first_unit() {
        let b = Deadline::new(Instant::now() + Duration::from_secs(5), Duration::from_secs(10));
        assert!(b.has_time_for_more(), "every invocation does at least one unit");
        assert!(!b.has_time_for_more());
    }
}
