//! The service's configuration, followed live in its config scope:
//! `flotilla config set max_text 500 --scope {{name}}` changes it for every instance at once; a
//! value [`Settings::validate`] refuses is reported and the running one kept.

use flotilla::app::Settings;
use flotilla::serde::{Deserialize, Serialize};

/// What the service runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "flotilla::serde", default, deny_unknown_fields)]
pub struct Config {
    /// The longest entry text accepted, in characters.
    pub max_text: usize,
    /// The service that owns the subjects entries are about, asked before an entry is kept;
    /// empty: subjects are taken unchecked.
    pub subject_service: String,
    /// Where that service answers for one subject (`{subject}` is replaced): 200 if it exists,
    /// 404 if not.
    pub subject_path: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_text: 2000,
            subject_service: "{{subject_service}}".into(),
            subject_path: "{{subject_path}}".into(),
        }
    }
}

impl Settings for Config {
    fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.max_text) {
            return Err("max_text must be 1 to 100000".into());
        }
        if !self.subject_service.is_empty() && !self.subject_path.contains("{subject}") {
            return Err("subject_path must contain `{subject}`".into());
        }
        Ok(())
    }
}
