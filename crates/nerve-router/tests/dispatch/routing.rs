//! Pattern routing through the bus agrees with `Pattern::matches`.

use std::sync::{Arc, Mutex};

use nerve_core::{Event, Pattern, json};
use nerve_router::Bus;
use proptest::prelude::*;

fn delivered_to(bus: &Bus, log: &Arc<Mutex<Vec<usize>>>, topic: &str) -> Vec<usize> {
    bus.emit(topic, json!(null)).unwrap();
    let mut got = std::mem::take(&mut *log.lock().unwrap());
    got.sort_unstable();
    got
}

#[test]
fn wildcard_table() {
    let patterns = ["user.login", "chat.*", "*", "*.failed", "a.*.c", "*.*"];
    let bus = Bus::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    for (i, p) in patterns.iter().enumerate() {
        let log = log.clone();
        bus.subscribe(*p, move |_: &Event| log.lock().unwrap().push(i))
            .unwrap();
    }
    let check = |topic: &str, expected: &[usize]| {
        assert_eq!(delivered_to(&bus, &log, topic), expected, "{topic}");
    };
    check("user.login", &[0, 2, 5]);
    check("user.logout", &[2, 5]);
    check("chat", &[2]);
    check("chat.message", &[1, 2, 5]);
    check("chat.message.sent", &[1, 2, 5]);
    check("task.failed", &[2, 3, 5]);
    check("task.run.failed", &[2, 5]);
    check("a.x.c", &[2, 4, 5]);
    check("a.c", &[2, 5]);
    check("a.x.y.c", &[2, 5]);
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned)
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![3 => segment(), 1 => Just("*".to_owned())], 1..4)
        .prop_map(|s| s.join("."))
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The trie and its cache route exactly where the reference matcher says,
    /// across subscribes and unsubscribes.
    #[test]
    fn routes_agree_with_pattern_matching(
        patterns in prop::collection::vec(pattern(), 1..8),
        topics in prop::collection::vec(topic(), 1..8),
        remove in prop::collection::vec(any::<bool>(), 8),
    ) {
        let bus = Bus::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut ids = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let log = log.clone();
            ids.push(bus.subscribe(p.as_str(), move |_: &Event| log.lock().unwrap().push(i)).unwrap());
        }
        let parsed: Vec<Pattern> = patterns.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        let mut live = vec![true; patterns.len()];
        for round in 0..2 {
            for topic in &topics {
                let expected: Vec<usize> = (0..patterns.len())
                    .filter(|&i| live[i] && parsed[i].matches(topic))
                    .collect();
                // Twice: the second emit is served from the route cache.
                prop_assert_eq!(delivered_to(&bus, &log, topic), expected.clone());
                prop_assert_eq!(delivered_to(&bus, &log, topic), expected);
            }
            if round == 0 {
                for (i, id) in ids.iter().enumerate() {
                    if remove[i] {
                        prop_assert!(bus.unsubscribe(*id));
                        live[i] = false;
                    }
                }
            }
        }
    }
}
