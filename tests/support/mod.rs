//! What the system tests share: the harness in `flotilla-bench`, pointed at the binary
//! under test and the repository's shipped manifest.

#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

pub use flotilla_bench::load;
pub use flotilla_bench::procs::{alive, descendants, free_addr, http_get, http_request};
pub use flotilla_bench::system::System;

/// The `flotilla` binary under test.
pub fn flotilla() -> &'static str {
    env!("CARGO_BIN_EXE_flotilla")
}

/// The repository's root, where the shipped manifest and routes live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `flotilla up` with the shipped manifest, on free ports in a temp dir.
pub fn start(extra: &[&str]) -> System {
    System::start(Path::new(flotilla()), &repo_root(), extra)
}
