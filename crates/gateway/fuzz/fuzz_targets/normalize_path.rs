//! Any path: normalization never panics, and its output is stable and clean.
#![no_main]

use flotilla_gateway::normalize::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(once) = normalize(path) {
        let twice = normalize(&once).expect("a normal form normalizes");
        assert_eq!(twice, once, "normalization is idempotent");
        assert!(once.starts_with('/'));
        assert!(!once.contains("//"));
        assert!(!once.split('/').any(|s| s == "." || s == ".."));
    }
});
