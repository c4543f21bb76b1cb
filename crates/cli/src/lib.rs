//! The `flotilla` command's library: the manifest, the supervisor behind `flotilla up`, and
//! the other subcommands. The binary only parses flags and calls in here.

pub mod chaos;
pub mod config_command;
pub mod events_command;
pub mod kube;
pub mod local_time;
pub mod logs;
pub mod manifest;
pub mod running;
pub mod scaffold;
pub mod status;
pub mod style;
pub mod supervisor;
pub mod token;
pub mod traces;
