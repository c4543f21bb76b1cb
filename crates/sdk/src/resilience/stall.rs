//! Time this process itself was not running: stopped (SIGSTOP, a debugger, a frozen VM) or
//! starved of CPU, so that neither its timers nor its sockets were served. A call in flight
//! through such a stall may time out, or look slow, through no fault of the service it went
//! to; the circuit breaker and outlier ejection ask [`StallMark::excuses`] and do not charge
//! that call to the upstream.
//!
//! A plain thread sleeps in short ticks and books any lateness beyond scheduling noise; a
//! stall still going on (the caller runs again, the watcher has not woken yet) is counted
//! from the watcher's last tick. A thread, not a task: it must not depend on the runtime it
//! watches, nor keep a test's paused clock moving. A runtime held up by its own blocking
//! code, with CPU to spare, is not seen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Once};
use std::time::{Duration, Instant};

/// How often the watchers look.
const TICK: Duration = Duration::from_millis(10);

/// Lateness of a tick below this is scheduling noise, not a stall.
const SLACK: Duration = Duration::from_millis(25);

/// A call that saw at least this much of its own process's stall is not held against the
/// service it called.
pub const EXCUSE: Duration = Duration::from_millis(100);

/// The process's stalls so far, in nanoseconds, and the thread watcher's last tick.
#[derive(Debug)]
struct Ledger {
    epoch: Instant,
    stalled_ns: AtomicU64,
    /// When the thread watcher last ticked, in nanoseconds after `epoch`.
    beat_ns: AtomicU64,
}

impl Ledger {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            stalled_ns: AtomicU64::new(0),
            beat_ns: AtomicU64::new(0),
        }
    }

    fn offset(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// A watcher that meant to wake `tick` after `slept_from` woke at `now`: anything past the
    /// tick and the slack is a stall.
    fn woke(&self, slept_from: Instant, tick: Duration, now: Instant) {
        let late = now.saturating_duration_since(slept_from).saturating_sub(tick);
        if late > SLACK {
            self.stalled_ns.fetch_add(late.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// The thread watcher ticked at `now`.
    fn beat(&self, now: Instant) {
        self.beat_ns.store(self.offset(now), Ordering::Relaxed);
    }

    /// All stalls so far, counting one still going on that the thread watcher has not woken
    /// from yet (the caller runs again, the watcher not quite).
    fn total(&self, now: Instant) -> Duration {
        let counted = Duration::from_nanos(self.stalled_ns.load(Ordering::Relaxed));
        let beat = self.beat_ns.load(Ordering::Relaxed);
        if beat == 0 {
            return counted;
        }
        let since_beat = Duration::from_nanos(self.offset(now).saturating_sub(beat)).saturating_sub(TICK);
        if since_beat > SLACK {
            counted + since_beat
        } else {
            counted
        }
    }
}

static LEDGER: LazyLock<Ledger> = LazyLock::new(Ledger::new);
static THREAD: Once = Once::new();

/// Starts the watcher (once per process).
fn watch() {
    THREAD.call_once(|| {
        let started = std::thread::Builder::new()
            .name("flotilla-stall".into())
            .spawn(|| loop {
                let from = Instant::now();
                std::thread::sleep(TICK);
                let now = Instant::now();
                LEDGER.woke(from, TICK, now);
                LEDGER.beat(now);
            });
        if let Err(err) = started {
            tracing::warn!(error = %err, "cannot watch for process stalls; timeouts during one count against upstreams");
        }
    });
}

/// Where the ledger stood when a call started.
#[derive(Debug, Clone, Copy)]
pub struct StallMark {
    at: Duration,
}

impl StallMark {
    /// Marks now (starting the watcher on first use).
    pub fn now() -> Self {
        watch();
        Self {
            at: LEDGER.total(Instant::now()),
        }
    }

    /// How long this process stalled since the mark.
    pub fn stalled(&self) -> Duration {
        LEDGER.total(Instant::now()).saturating_sub(self.at)
    }

    /// Whether the process stalled enough since the mark that a failure or slowness seen
    /// now may be its own doing rather than the upstream's.
    pub fn excuses(&self) -> bool {
        self.stalled() >= EXCUSE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_beyond_the_slack_is_a_stall_and_noise_is_not() {
        let ledger = Ledger::new();
        let from = ledger.epoch;
        ledger.woke(from, TICK, from + TICK + Duration::from_millis(5));
        assert_eq!(ledger.total(from + Duration::from_millis(20)), Duration::ZERO);
        ledger.woke(from, TICK, from + TICK + Duration::from_millis(300));
        assert_eq!(
            ledger.total(from + Duration::from_millis(400)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn a_stall_still_going_on_counts_before_the_watcher_wakes_from_it() {
        let ledger = Ledger::new();
        let beat = ledger.epoch + Duration::from_secs(1);
        ledger.beat(beat);
        assert_eq!(ledger.total(beat + TICK), Duration::ZERO, "on time");
        // The process resumes 2 s later; the caller asks before the watcher ticks.
        assert_eq!(
            ledger.total(beat + TICK + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        // The watcher wakes and books it: counted once, not twice.
        ledger.woke(beat, TICK, beat + TICK + Duration::from_secs(2));
        ledger.beat(beat + TICK + Duration::from_secs(2));
        assert_eq!(
            ledger.total(beat + TICK + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
