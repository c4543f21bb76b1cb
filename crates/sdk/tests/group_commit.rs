//! Group commit against a crash: a child process writes units through grouped commits as
//! fast as it can and prints each unit's id once its commit returned (acknowledged); it is
//! killed with SIGKILL mid-stream. Every acknowledged unit is in the database afterwards.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla::store::Store;

const CHILD: &str = "FLOTILLA_GROUP_COMMIT_CHILD";

async fn open(dir: &std::path::Path) -> Store {
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_units.sql"),
        "CREATE TABLE units (id BIGINT PRIMARY KEY, body TEXT NOT NULL);",
    )
    .unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("units.db").display());
    Store::open_dir(&url, &migrations).await.unwrap()
}

/// The child: 32 writers, each unit acknowledged on stdout once committed.
async fn write_until_killed(dir: &std::path::Path) {
    let store = open(dir).await;
    println!("ready");
    let writers: Vec<_> = (0..32i64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let id = writer * 1_000_000 + n;
                    let mut tx = store.begin_grouped().await.unwrap();
                    sqlx::query("INSERT INTO units (id, body) VALUES ($1, $2)")
                        .bind(id)
                        .bind("x".repeat(200))
                        .execute(&mut **tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    println!("acked {id} after {} syncs", store.wal_syncs());
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn a_kill_9_loses_no_acknowledged_unit() {
    if let Ok(dir) = std::env::var(CHILD) {
        write_until_killed(std::path::Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_kill_9_loses_no_acknowledged_unit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let mut syncs = 0;
    let mut note = |line: &str, acked: &mut Vec<i64>| {
        if let Some(rest) = line.strip_prefix("acked ") {
            let mut words = rest.split_whitespace();
            acked.push(words.next().unwrap().parse::<i64>().unwrap());
            syncs = words.nth(1).unwrap().parse::<u64>().unwrap().max(syncs);
        }
    };
    let started = Instant::now();
    // Killed at some moment in the middle of the stream: after 500 acknowledgements.
    while let Some(Ok(line)) = lines.next() {
        note(&line, &mut acked);
        if acked.len() == 500 {
            child.kill().unwrap();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child wrote too slowly"
        );
    }
    // What it printed before it died was acknowledged too.
    for line in lines.map_while(Result::ok) {
        note(&line, &mut acked);
    }
    child.wait().unwrap();
    assert!(acked.len() >= 500, "{}", acked.len());
    let store = open(dir.path()).await;
    let kept: std::collections::HashSet<i64> = sqlx::query_scalar("SELECT id FROM units")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost: Vec<_> = acked.iter().filter(|id| !kept.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged units lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "{} units acknowledged after {syncs} syncs, {} kept",
        acked.len(),
        kept.len()
    );
    // At most one sync per unit (how many share one depends on how fast the disk syncs; the
    // store's unit test shows sixteen sharing one).
    assert!(
        syncs > 0 && syncs <= acked.len() as u64,
        "{syncs} syncs for {} units",
        acked.len()
    );
}
