//! Flotilla's JSON log lines for people: their levels, and how one is drawn on a terminal.

pub mod level;
pub mod render;
