//! Configuration: local files with errors that name the file and line ([`file`]), and typed
//! configuration resolved from defaults, file, environment and the control plane's store,
//! followed live ([`live`]) through the store's client ([`client`]).

pub mod client;
pub mod file;
pub mod live;

pub use client::{ConfigClient, ConfigClientError, Write};
pub use file::{FileError, TomlFile};
pub use live::{Applied, ConfigError, ConfigLoader, LiveConfig};
