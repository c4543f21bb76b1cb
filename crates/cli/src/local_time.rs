//! Wall-clock times for people: processes log and spans are stamped in UTC, but someone
//! reading `flotilla logs` or `flotilla traces` thinks in their own time zone. The zone is a
//! value, so tests pin UTC instead of depending on the machine's.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The time zone times are shown in.
#[derive(Debug, Clone)]
pub struct LocalTime {
    zone: TimeZone,
}

impl LocalTime {
    /// The machine's zone (`TZ`, else `/etc/localtime`); UTC when neither names one.
    pub fn system() -> Self {
        Self {
            zone: TimeZone::system(),
        }
    }

    /// UTC, for output that must not depend on where it runs (tests).
    pub fn utc() -> Self {
        Self { zone: TimeZone::UTC }
    }

    /// `HH:MM:SS.mmm` of `at` in this zone: a log line or a span start at a glance.
    pub fn clock(&self, at: Timestamp) -> String {
        let t = self.zone.to_datetime(at);
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

/// The instant `nanos` nanoseconds after the Unix epoch (how spans are stamped). Every `u64`
/// fits (it ends in the year 2554); the `Option` only mirrors jiff's checked conversion.
pub fn from_unix_nanos(nanos: u64) -> Option<Timestamp> {
    Timestamp::from_nanosecond(i128::from(nanos)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_shows_milliseconds() {
        let at: Timestamp = "2026-11-30T22:01:02.123456Z".parse().unwrap();
        assert_eq!(LocalTime::utc().clock(at), "22:01:02.123");
    }

    #[test]
    fn clock_follows_the_zone() {
        let at: Timestamp = "2026-07-01T10:00:00Z".parse().unwrap();
        let berlin = LocalTime {
            zone: TimeZone::fixed(jiff::tz::offset(2)),
        };
        assert_eq!(berlin.clock(at), "12:00:00.000");
    }

    #[test]
    fn unix_nanos_convert() {
        let at = from_unix_nanos(1_000_000_001_500_000).unwrap();
        assert_eq!(LocalTime::utc().clock(at), "13:46:40.001");
    }
}
