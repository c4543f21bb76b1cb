//! Load balancing over a list of endpoints. One implementation, used by the gateway and by
//! service-to-service calls.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Round robin: each pick takes the next endpoint in turn.
///
/// The counter is shared by every caller, so concurrent requests spread evenly; the list may
/// change between picks (instances come and go) and the counter simply wraps over the new one.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A balancer starting at the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next endpoint, or `None` when the list is empty.
    pub fn pick<'a, T>(&self, endpoints: &'a [T]) -> Option<&'a T> {
        if endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        endpoints.get(n % endpoints.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_turns_and_survives_a_shrinking_list() {
        let rr = RoundRobin::new();
        let three = ["a", "b", "c"];
        let picks: Vec<_> = (0..6).map(|_| *rr.pick(&three).unwrap()).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
        let one = ["z"];
        assert_eq!(rr.pick(&one), Some(&"z"));
        assert_eq!(rr.pick::<&str>(&[]), None);
    }
}
