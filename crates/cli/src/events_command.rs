//! `flotilla events`: the event log's topics and groups, a topic's events, and replaying a
//! dead letter.

use anyhow::Result;
use flotilla::events::EventsClient;

/// `events topics`: every topic with its groups' lag.
pub async fn topics(client: &EventsClient, json: bool) -> Result<()> {
    let topics = client.topics().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&topics)?);
        return Ok(());
    }
    println!(
        "{:<32} {:>8} {:>10}  GROUPS (next offset, in flight, lag)",
        "TOPIC", "EVENTS", "NEXT"
    );
    for t in &topics {
        let groups = t
            .groups
            .iter()
            .map(|g| format!("{} ({}, {}, {})", g.group, g.next_offset, g.in_flight, g.lag))
            .collect::<Vec<_>>()
            .join("; ");
        println!("{:<32} {:>8} {:>10}  {groups}", t.topic, t.events, t.next_offset);
    }
    if topics.is_empty() {
        eprintln!("(no topics yet)");
    }
    Ok(())
}

/// `events read`: a topic's events from an offset (dead letters show why they died).
pub async fn read(client: &EventsClient, topic: &str, from: u64, limit: u32, json: bool) -> Result<()> {
    let events = client.read(topic, from, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    for d in &events {
        let e = &d.event;
        println!(
            "{:>8}  {:<28} {:<24} {}{}",
            d.offset,
            e.kind,
            e.subject.as_deref().unwrap_or("-"),
            e.id,
            e.deadletterreason
                .as_deref()
                .map(|r| format!("\n          dead: {r}"))
                .unwrap_or_default()
        );
    }
    if events.is_empty() {
        eprintln!("(no events in {topic} from offset {from})");
    }
    Ok(())
}

/// `events replay`: a dead letter back onto its topic.
pub async fn replay(client: &EventsClient, dead_letter_topic: &str, offset: u64) -> Result<()> {
    let done = client.replay(dead_letter_topic, offset).await?;
    println!(
        "replayed {dead_letter_topic} offset {offset} onto {} at offset {} (as {})",
        done["topic"].as_str().unwrap_or("?"),
        done["offset"],
        done["id"].as_str().unwrap_or("?")
    );
    Ok(())
}
