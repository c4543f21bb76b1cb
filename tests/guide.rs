//! `docs/guide.md`, run: every `sh` block, in the order written, in one bash session against a
//! real `flotilla up` — the first block (`flotilla up` itself) is the system this test starts
//! on free ports, which the other commands find through its data dir as a reader's would. If
//! the guide and the code disagree, this fails and names the command.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The guide's `sh` blocks, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_command_of_the_guide_runs_against_a_real_system() {
    let guide = std::fs::read_to_string(support::repo_root().join("docs/guide.md")).unwrap();
    let blocks = sh_blocks(&guide);
    assert!(blocks.len() > 5, "the guide has its commands in sh blocks");
    assert_eq!(blocks[0].trim(), "flotilla up", "the guide starts the system first");

    let system = support::System::start_with_env(
        Path::new(support::flotilla()),
        &support::repo_root(),
        &[],
        &[("OTEL_TRACES_SAMPLER_ARG", "1"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    // `flotilla` on the PATH, as a reader has it.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(support::flotilla(), bin.path().join("flotilla")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -euxo pipefail\n{}", blocks[1..].join("\n"));
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(system.dir.path())
        .env("PATH", path)
        .env("GATEWAY", format!("http://{}", system.gateway))
        // The service the guide makes is built where later runs find its dependencies built.
        .env("CARGO_TARGET_DIR", support::repo_root().join("target/scaffolded"))
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a command of the guide failed (the last `+` line of the trace):\n{stderr}\n--- its output:\n{stdout}\n--- up said:\n{}",
        system.output()
    );
    // What the reader is told they will see.
    assert!(stdout.contains("the running system serves it at"), "{stdout}");
    assert!(stdout.contains("reviews.entry-added"), "the event: {stdout}");
    assert!(
        stdout.contains("reviews → reviews-2") || stdout.contains("reviews-1 → reviews-2"),
        "{stdout}"
    );
}
