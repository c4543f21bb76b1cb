//! Admission for work that goes on after the answer: a saga, a job. By Little's law, the
//! units already open finish in about `open / rate`; a new one is taken only while that is
//! within the target, so every unit taken finishes in about the target at any offered load,
//! and the rest are refused at once with when to come back.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Overloaded;

/// How finishing units are counted: per bucket, over the last [`BUCKETS`] of them.
const BUCKET: Duration = Duration::from_millis(100);
/// Three seconds of buckets: long enough to smooth a burst, short enough to follow a change.
const BUCKETS: usize = 30;
/// The longest `Retry-After` given: a client should come back to see.
const LONGEST_RETRY: Duration = Duration::from_secs(30);

/// The open units of one kind of work and the rate they finish at. Clones share it: the
/// handler that takes units and the worker that finishes them hold the same one.
#[derive(Clone, Debug)]
pub struct Backlog {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// Open units as the shared store said last ([`Backlog::observe`]).
    open_seen: u64,
    /// Units taken here since then.
    taken: u64,
    /// Units that left here since then.
    left: u64,
    /// Units that left here, per [`BUCKET`], a ring.
    finished: [u32; BUCKETS],
    /// Whether units were open during each bucket of the ring: the rate is what finished per
    /// second of work, not per second of the clock.
    busy: [bool; BUCKETS],
    /// Where the ring is: the bucket counted last, from `started`.
    bucket: u64,
    started: Instant,
    /// What every worker of this kind finishes per second, as the shared store said last.
    fleet_rate: Option<f64>,
    /// The highest rate seen lately, and when: after a quiet spell the rate reads low, but
    /// the workers can still do what they did a minute ago.
    peak: (f64, Instant),
    /// Units always taken, whatever the rate (before any has finished, say).
    floor: u64,
}

/// How fast a remembered peak rate fades: by half every this long.
const PEAK_HALF_LIFE: Duration = Duration::from_secs(30);

impl Backlog {
    /// A backlog that takes at least `floor` open units (enough to keep its workers busy
    /// before the first ones finish and give a rate).
    pub fn new(floor: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                open_seen: 0,
                taken: 0,
                left: 0,
                finished: [0; BUCKETS],
                busy: [false; BUCKETS],
                bucket: 0,
                started: Instant::now(),
                fleet_rate: None,
                peak: (0.0, Instant::now()),
                floor: floor.max(1),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts only: still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one more unit if those open would finish within `within`; otherwise the
    /// refusal, saying when enough of them will have finished. `what` names the open units
    /// for the refusal's detail (`12 orders are being confirmed`).
    pub fn admit(&self, within: Duration, what: impl FnOnce(u64) -> String) -> Result<(), Overloaded> {
        let mut state = self.state();
        let now = Instant::now();
        let rate = state.capacity(now);
        let limit = ((rate * within.as_secs_f64()) as u64).max(state.floor);
        let open = state.open();
        if open < limit {
            state.taken += 1;
            state.mark_busy();
            return Ok(());
        }
        let excess = (open + 1 - limit) as f64;
        let retry_after = if rate > 0.0 {
            Duration::from_secs_f64(excess / rate).min(LONGEST_RETRY)
        } else {
            Duration::from_secs(1)
        };
        Err(Overloaded {
            what: what(open),
            retry_after,
        })
    }

    /// `n` units left the workers here (finished, or parked to wait for something away:
    /// either way no longer in the line).
    pub fn left(&self, n: u64) {
        let mut state = self.state();
        state.roll(Instant::now());
        state.left += n;
        state.mark_busy();
        let slot = (state.bucket % BUCKETS as u64) as usize;
        state.finished[slot] = state.finished[slot].saturating_add(n as u32);
    }

    /// What the shared store says: `open` units (every worker's), finishing at `fleet_rate`
    /// per second across the workers that said (`None`: not known; this worker's own rate
    /// stands in).
    pub fn observe(&self, open: u64, fleet_rate: Option<f64>) {
        let mut state = self.state();
        state.roll(Instant::now());
        state.open_seen = open;
        state.taken = 0;
        state.left = 0;
        state.fleet_rate = fleet_rate;
    }

    /// Units this worker finished per second lately, for others to add up.
    pub fn rate(&self) -> f64 {
        let mut state = self.state();
        state.local_rate(Instant::now())
    }

    /// Open units, as far as this process knows.
    pub fn open(&self) -> u64 {
        self.state().open()
    }
}

impl State {
    fn open(&self) -> u64 {
        (self.open_seen + self.taken).saturating_sub(self.left)
    }

    /// Moves the ring to `now`, emptying the buckets it passes; they were busy if units were
    /// open (nothing has changed since the last call), and so is the current one then.
    fn roll(&mut self, now: Instant) {
        let current = (now.duration_since(self.started).as_millis() / BUCKET.as_millis()) as u64;
        let passed = current.saturating_sub(self.bucket).min(BUCKETS as u64);
        let open = self.open() > 0;
        for i in 1..=passed {
            let slot = ((self.bucket + i) % BUCKETS as u64) as usize;
            self.finished[slot] = 0;
            self.busy[slot] = open;
        }
        self.bucket = current.max(self.bucket);
        if open {
            self.mark_busy();
        }
    }

    /// Units were open in the current bucket.
    fn mark_busy(&mut self) {
        self.busy[(self.bucket % BUCKETS as u64) as usize] = true;
    }

    fn local_rate(&mut self, now: Instant) -> f64 {
        self.roll(now);
        let counted: u64 = self.finished.iter().map(|&n| u64::from(n)).sum();
        // Per second of work: clients that come back in waves (told `Retry-After: 1`, all at
        // once) leave the workers idle between them, and a rate per second of the clock would
        // read their pace as the workers' and admit no more than that pace — a closed loop
        // held at 16–18 orders/s by its own refusals. Divided by a second at least, so the
        // first few units do not read as a flood.
        let busy = self.busy.iter().filter(|busy| **busy).count() as u32;
        let window = (BUCKET * busy).max(Duration::from_secs(1));
        counted as f64 / window.as_secs_f64()
    }

    /// The rate units finish at: every worker's, or this one's when that is more (or all
    /// there is), or the peak of the last minutes, fading, when that is more still.
    fn capacity(&mut self, now: Instant) -> f64 {
        let local = self.local_rate(now);
        let rate = self.fleet_rate.map_or(local, |fleet| fleet.max(local));
        let (peak, at) = self.peak;
        let faded = peak * 0.5f64.powf(now.duration_since(at).as_secs_f64() / PEAK_HALF_LIFE.as_secs_f64());
        if rate >= faded {
            self.peak = (rate, now);
            rate
        } else {
            faded
        }
    }
}
