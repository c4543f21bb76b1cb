//! Header rules: headers a route sets (replacing) or removes on the request before it goes
//! upstream, or on the answer before it goes back.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers to add (replacing) and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Set these, replacing any value already there.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Remove these.
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// Applies the rules: removals first, then additions.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}
