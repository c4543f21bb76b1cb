//! `flotilla status`: the services and instances the control plane knows, as a table or JSON.

use std::time::Duration;

use flotilla::discovery::RegistryClient;
use flotilla_api::{Instance, InstanceList};

/// Fetches the registry's view.
pub async fn fetch(client: &RegistryClient) -> Result<InstanceList, flotilla::discovery::RegistryError> {
    client.instances(None, None, Duration::ZERO).await
}

/// Formats milliseconds as a short uptime (`3s`, `4m 10s`, `2h 5m`, `3d 4h`).
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The table `flotilla status` prints.
pub fn table(control: &str, list: &InstanceList) -> String {
    let headers = ["SERVICE", "INSTANCE", "ADDRESS", "VERSION", "PID", "HEALTH", "UPTIME"];
    let rows: Vec<[String; 7]> = list
        .instances
        .iter()
        .map(|i: &Instance| {
            [
                i.service.clone(),
                i.instance_id.clone(),
                i.address.clone(),
                i.version.clone(),
                i.pid().map_or("-".into(), |p| p.to_string()),
                i.health.to_string(),
                uptime(i.uptime_ms),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let services: std::collections::BTreeSet<&str> = list.instances.iter().map(|i| i.service.as_str()).collect();
    out.push_str(&format!(
        "control plane {control}: {} services, {} instances (revision {})\n\n",
        services.len(),
        list.instances.len(),
        list.index
    ));
    let line = |cells: &[String]| {
        let mut l = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    out.push_str(&line(&headers.map(String::from)));
    for row in &rows {
        out.push_str(&line(row));
    }
    if rows.is_empty() {
        out.push_str("(no instances registered)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_naturally() {
        assert_eq!(uptime(3_400), "3s");
        assert_eq!(uptime(250_000), "4m 10s");
        assert_eq!(uptime(7_500_000), "2h 5m");
        assert_eq!(uptime(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn table_has_a_row_per_instance() {
        let list: InstanceList = serde_json::from_value(serde_json::json!({
            "index": 9,
            "instances": [{
                "service": "catalog", "instance_id": "catalog-1-ab", "address": "127.0.0.1:4000",
                "version": "0.1.0", "metadata": {"pid": "77"}, "health": "passing",
                "uptime_ms": 61000, "last_heartbeat_ms": 10
            }]
        }))
        .unwrap();
        let t = table("127.0.0.1:7070", &list);
        assert!(t.contains("SERVICE"), "{t}");
        assert!(t.contains("catalog-1-ab"), "{t}");
        assert!(t.contains("77"), "{t}");
        assert!(t.contains("1m 1s"), "{t}");
    }
}
