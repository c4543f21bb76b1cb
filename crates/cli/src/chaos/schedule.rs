//! Durations given as a range (`1s..3s`) or one value (`2s`), from which a random one is
//! drawn each time: how long a pause lasts, how long to wait before the next fault.

use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

/// A range of durations, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The shortest.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
}

impl DurationRange {
    /// A range of one duration.
    pub fn exactly(duration: Duration) -> Self {
        Self {
            min: duration,
            max: duration,
        }
    }

    /// A duration drawn uniformly from the range, to the millisecond.
    pub fn pick(&self, rng: &mut impl Rng) -> Duration {
        let (min, max) = (millis(self.min), millis(self.max));
        if min >= max {
            return self.min;
        }
        Duration::from_millis(rng.random_range(min..=max))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl FromStr for DurationRange {
    type Err = String;

    /// `2s`, or `1s..3s` (humantime units: `ms`, `s`, `m`, `h`, and `1m30s`); never zero.
    fn from_str(text: &str) -> Result<Self, String> {
        let parse = |part: &str| {
            humantime::parse_duration(part.trim())
                .map_err(|e| format!("`{}` is not a duration ({e}); say 500ms, 2s or 1m", part.trim()))
        };
        let range = match text.split_once("..") {
            Some((min, max)) => Self {
                min: parse(min)?,
                max: parse(max)?,
            },
            None => Self::exactly(parse(text)?),
        };
        if range.min > range.max {
            return Err(format!("`{text}` ends before it starts"));
        }
        if range.min.is_zero() {
            return Err(format!("`{text}` includes zero; a duration here must be at least 1ms"));
        }
        Ok(range)
    }
}

impl std::fmt::Display for DurationRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.min == self.max {
            write!(f, "{}", show(self.min))
        } else {
            write!(f, "{}..{}", show(self.min), show(self.max))
        }
    }
}

/// When a fault repeats: after a wait drawn from `every`, until `duration` has passed (none:
/// until Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The wait between two faults.
    pub every: DurationRange,
    /// How long the whole run lasts.
    pub duration: Option<Duration>,
}

impl Schedule {
    /// The wait before the next fault, or none when it would come after the run's end
    /// (`elapsed` is how long the run has lasted so far).
    pub fn next_wait(&self, elapsed: Duration, rng: &mut impl Rng) -> Option<Duration> {
        let wait = self.every.pick(rng);
        match self.duration {
            Some(duration) if elapsed + wait > duration => None,
            _ => Some(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn ranges_and_single_durations_parse() {
        let range: DurationRange = "2s..3s".parse().unwrap();
        assert_eq!(range.min, Duration::from_secs(2));
        assert_eq!(range.max, Duration::from_secs(3));
        assert_eq!(range.to_string(), "2s..3s");
        let one: DurationRange = "1500ms".parse().unwrap();
        assert_eq!(one, DurationRange::exactly(Duration::from_millis(1500)));
        assert_eq!(one.to_string(), "1s 500ms");
        assert_eq!(
            " 1m .. 1m30s ".parse::<DurationRange>().unwrap().max,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!("3s..2s"
            .parse::<DurationRange>()
            .unwrap_err()
            .contains("ends before it starts"));
        assert!("0s..2s".parse::<DurationRange>().unwrap_err().contains("zero"));
        assert!("soon"
            .parse::<DurationRange>()
            .unwrap_err()
            .contains("`soon` is not a duration"));
        assert!("1s..".parse::<DurationRange>().is_err());
    }

    #[test]
    fn picks_stay_in_the_range_and_repeat_with_the_seed() {
        let range: DurationRange = "1s..3s".parse().unwrap();
        let picks = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50).map(|_| range.pick(&mut rng)).collect::<Vec<_>>()
        };
        let first = picks(7);
        assert_eq!(first, picks(7), "the same seed, the same waits");
        assert_ne!(first, picks(8));
        assert!(first.iter().all(|d| range.min <= *d && *d <= range.max));
        assert!(first.iter().any(|d| *d != first[0]), "not all the same");
    }

    #[test]
    fn a_schedule_stops_before_its_end() {
        let schedule = Schedule {
            every: "2s".parse().unwrap(),
            duration: Some(Duration::from_secs(5)),
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            schedule.next_wait(Duration::ZERO, &mut rng),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            schedule.next_wait(Duration::from_secs(3), &mut rng),
            Some(Duration::from_secs(2))
        );
        assert_eq!(schedule.next_wait(Duration::from_millis(3001), &mut rng), None);
        let forever = Schedule {
            duration: None,
            ..schedule
        };
        assert!(forever.next_wait(Duration::from_secs(1 << 30), &mut rng).is_some());
    }
}
