//! `flotilla traces`, `flotilla trace` and `flotilla deps`: the control plane's stored traces
//! as a table, one trace drawn as a waterfall, and the service dependency graph, all drawn
//! in the terminal from the telemetry API's answers.

pub mod client;
pub mod deps;
pub mod list;
pub mod waterfall;

pub use self::client::{TelemetryClient, TelemetryError};

/// Milliseconds of `nanos` with as many decimals as a short duration needs to say anything
/// (`0.045`, `4.50`, `12.3`, `312`), so columns of them stay narrow.
pub fn millis(nanos: u64) -> String {
    if nanos == 0 {
        return "0".to_owned();
    }
    let ms = nanos as f64 / 1e6;
    millis_f(ms)
}

/// [`millis`] for a value already in milliseconds (the dependency graph's percentiles).
pub fn millis_f(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A duration for a sentence: `312 ms`, or `4.21 s` past a second.
pub fn duration(nanos: u64) -> String {
    if nanos >= 1_000_000_000 {
        format!("{:.2} s", nanos as f64 / 1e9)
    } else {
        format!("{} ms", millis(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_keep_what_matters() {
        assert_eq!(millis(0), "0");
        assert_eq!(millis(45_000), "0.045");
        assert_eq!(millis(4_500_000), "4.50");
        assert_eq!(millis(12_340_000), "12.3");
        assert_eq!(millis(312_400_000), "312");
        assert_eq!(duration(312_400_000), "312 ms");
        assert_eq!(duration(4_210_000_000), "4.21 s");
    }
}
