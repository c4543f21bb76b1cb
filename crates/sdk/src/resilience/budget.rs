//! A retry budget (Finagle's and Linkerd's): retries may add at most a fixed share of the
//! request rate, plus a small floor, over a sliding window. A failing service then sees at
//! most ~1.2× its normal load, never the 3× of unbounded "retry 3 times" policies.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Budget settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries may add this share of the requests seen in the window (Linkerd: 0.2).
    pub ratio: f64,
    /// Retries always allowed per second, so a quiet client can still retry (Linkerd: 10).
    pub min_per_second: u32,
    /// The sliding window (Linkerd: 10 s).
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Counts of one second of the window.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: Instant,
    requests: u64,
    retries: u64,
}

/// A retry budget shared by every call to one service.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    slots: Mutex<VecDeque<Slot>>,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            slots: Mutex::new(VecDeque::new()),
        }
    }

    fn with_current<R>(&self, f: impl FnOnce(&mut VecDeque<Slot>) -> R) -> R {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        while slots
            .front()
            .is_some_and(|s| now.duration_since(s.start) >= self.config.window)
        {
            slots.pop_front();
        }
        if slots
            .back()
            .is_none_or(|s| now.duration_since(s.start) >= Duration::from_secs(1))
        {
            slots.push_back(Slot {
                start: now,
                requests: 0,
                retries: 0,
            });
        }
        f(&mut slots)
    }

    /// Records one original request (not a retry).
    pub fn deposit(&self) {
        self.with_current(|slots| {
            if let Some(s) = slots.back_mut() {
                s.requests += 1;
            }
        });
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let floor = f64::from(self.config.min_per_second) * self.config.window.as_secs_f64();
        self.with_current(|slots| {
            let requests: u64 = slots.iter().map(|s| s.requests).sum();
            let retries: u64 = slots.iter().map(|s| s.retries).sum();
            let allowed = floor + self.config.ratio * requests as f64;
            if (retries as f64) < allowed {
                if let Some(s) = slots.back_mut() {
                    s.retries += 1;
                }
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_requests_plus_a_floor() {
        let budget = RetryBudget::new(BudgetConfig {
            ratio: 0.2,
            min_per_second: 1,
            window: Duration::from_secs(10),
        });
        for _ in 0..100 {
            budget.deposit();
        }
        // 10 (floor: 1/s over 10 s) + 20 (20% of 100).
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 30);
        assert!(!budget.try_withdraw(), "spent");
        // The window slides: after it, the spent retries no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(budget.try_withdraw());
    }
}
