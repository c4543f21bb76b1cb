//! What changed recently, for the overview: instances that joined, left or changed health
//! (the registry keeps only who is there now, so a watcher remembers the moves), breakers
//! that opened or closed at a gateway (the gateway keeps only a breaker's state, so a watcher
//! reads it every few seconds and remembers the turns), config revisions (from the config
//! store) and dead letters (from the event log), newest first.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_api::Health;

use crate::ControlState;

/// Membership moves remembered.
const KEPT: usize = 200;

/// A move of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Move {
    /// An instance registered.
    Joined,
    /// An instance deregistered or its lease expired.
    Left,
    /// An instance's health check began failing.
    Failing,
    /// An instance's health check passes again.
    Passing,
    /// A gateway's breaker for a route opened (the route named).
    BreakerOpened(String),
    /// It closed again.
    BreakerClosed(String),
}

/// One remembered move.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    /// When it was seen, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// The instance's service.
    pub(crate) service: String,
    /// The instance.
    pub(crate) instance: String,
    /// What happened.
    pub(crate) what: Move,
}

/// The newest membership moves, shared by the watcher and the pages.
#[derive(Debug, Default)]
pub struct Changes {
    recent: Mutex<VecDeque<Membership>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Changes {
    fn record(&self, moves: impl IntoIterator<Item = Membership>) {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for change in moves {
            if recent.len() == KEPT {
                recent.pop_back();
            }
            recent.push_front(change);
        }
    }

    /// The newest `n` moves, newest first.
    pub(crate) fn newest(&self, n: usize) -> Vec<Membership> {
        let recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.iter().take(n).cloned().collect()
    }
}

/// Who is there and how they are: instance id → (service, passing).
type Seen = BTreeMap<String, (String, bool)>;

/// The moves from one view of the fleet to the next.
fn moves(before: &Seen, after: &Seen, at_ms: u64) -> Vec<Membership> {
    let mut out = Vec::new();
    let made = |service: &str, instance: &str, what| Membership {
        at_ms,
        service: service.to_owned(),
        instance: instance.to_owned(),
        what,
    };
    for (id, (service, passing)) in after {
        match before.get(id) {
            None => out.push(made(service, id, Move::Joined)),
            Some((_, was)) if was != passing => {
                out.push(made(service, id, if *passing { Move::Passing } else { Move::Failing }));
            }
            Some(_) => {}
        }
    }
    for (id, (service, _)) in before {
        if !after.contains_key(id) {
            out.push(made(service, id, Move::Left));
        }
    }
    out
}

/// How often the gateways' breakers are read.
const BREAKERS_EVERY: Duration = Duration::from_secs(3);

/// Breaker state by (gateway instance, route): (backend service, state).
type Breakers = BTreeMap<(String, String), (String, String)>;

/// The turns of breakers from one reading to the next: opened (from any state to `open`) and
/// closed (from `open` or `half_open` to `closed`). A route or gateway first seen is no turn.
fn turns(before: &Breakers, after: &Breakers, at_ms: u64) -> Vec<Membership> {
    after
        .iter()
        .filter_map(|((gateway, route), (service, state))| {
            let (_, was) = before.get(&(gateway.clone(), route.clone()))?;
            let what = match (was.as_str(), state.as_str()) {
                (w, "open") if w != "open" => Move::BreakerOpened(route.clone()),
                ("open" | "half_open", "closed") => Move::BreakerClosed(route.clone()),
                _ => return None,
            };
            Some(Membership {
                at_ms,
                service: service.clone(),
                instance: gateway.clone(),
                what,
            })
        })
        .collect()
}

/// Reads every gateway's breakers every [`BREAKERS_EVERY`] and remembers each turn, until
/// `stopped`.
pub async fn watch_breakers(state: Arc<ControlState>, stopped: impl Future<Output = ()>) {
    let follow = async {
        let mut seen: Breakers = BTreeMap::new();
        let mut every = tokio::time::interval(BREAKERS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let mut now = Breakers::new();
            for (gateway, table) in super::gateway::tables(&state).await {
                // A gateway that did not answer keeps what was seen of it.
                let Ok(table) = table else {
                    now.extend(
                        seen.iter()
                            .filter(|((g, _), _)| *g == gateway)
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                    continue;
                };
                for route in table.routes {
                    let service = route
                        .backend
                        .strip_prefix("service:")
                        .unwrap_or(&route.backend)
                        .to_owned();
                    now.insert((gateway.clone(), route.name), (service, route.breaker));
                }
            }
            state.changes.record(turns(&seen, &now, now_ms()));
            seen = now;
        }
    };
    tokio::select! {
        () = follow => {}
        () = stopped => {}
    }
}

/// Follows the registry (a blocking query) and remembers each move, until `stopped`.
pub async fn watch_membership(state: Arc<ControlState>, stopped: impl Future<Output = ()>) {
    let follow = async {
        let mut index = 0;
        let mut seen: Option<Seen> = None;
        loop {
            let list = state.registry.list_after(None, index, Duration::from_secs(30)).await;
            let now: Seen = list
                .instances
                .iter()
                .map(|i| (i.instance_id.clone(), (i.service.clone(), i.health == Health::Passing)))
                .collect();
            if let Some(before) = &seen {
                state.changes.record(moves(before, &now, now_ms()));
            }
            seen = Some(now);
            if list.index == index {
                // Nothing new within the wait (or a store without blocking): do not spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            index = list.index;
        }
    };
    tokio::select! {
        () = follow => {}
        () = stopped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(list: &[(&str, &str, bool)]) -> Seen {
        list.iter()
            .map(|(id, service, passing)| ((*id).to_owned(), ((*service).to_owned(), *passing)))
            .collect()
    }

    #[test]
    fn joins_leaves_and_health_changes_are_moves() {
        let before = seen(&[("a", "catalog", true), ("b", "orders", true)]);
        let after = seen(&[("a", "catalog", false), ("c", "orders", true)]);
        let found: Vec<(String, Move)> = moves(&before, &after, 1)
            .into_iter()
            .map(|m| (m.instance, m.what))
            .collect();
        assert_eq!(
            found,
            vec![
                ("a".to_owned(), Move::Failing),
                ("c".to_owned(), Move::Joined),
                ("b".to_owned(), Move::Left)
            ]
        );
        assert!(moves(&after, &after, 2).is_empty());
    }

    #[test]
    fn a_breaker_opening_and_closing_are_turns_and_a_new_route_is_not() {
        let state = |s: &str| ("catalog".to_owned(), s.to_owned());
        let key = |r: &str| ("gw-1".to_owned(), r.to_owned());
        let before: Breakers = [(key("catalog"), state("closed")), (key("stock"), state("open"))].into();
        let after: Breakers = [
            (key("catalog"), state("open")),
            (key("stock"), state("closed")),
            (key("new"), state("open")),
        ]
        .into();
        let found: Vec<Move> = turns(&before, &after, 1).into_iter().map(|m| m.what).collect();
        assert_eq!(
            found,
            vec![
                Move::BreakerOpened("catalog".into()),
                Move::BreakerClosed("stock".into())
            ]
        );
        assert!(turns(&after, &after, 2).is_empty());
    }

    #[test]
    fn only_the_newest_are_kept_newest_first() {
        let changes = Changes::default();
        changes.record((0..KEPT as u64 + 5).map(|i| Membership {
            at_ms: i,
            service: "s".into(),
            instance: format!("i{i}"),
            what: Move::Joined,
        }));
        let newest = changes.newest(3);
        assert_eq!(newest.iter().map(|m| m.at_ms).collect::<Vec<_>>(), vec![204, 203, 202]);
        assert_eq!(changes.recent.lock().unwrap().len(), KEPT);
    }
}
