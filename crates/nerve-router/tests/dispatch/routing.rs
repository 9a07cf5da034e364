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

/// One thread emitting one topic on two buses, subscribing and
/// unsubscribing between emits: each emit reaches exactly the current
/// subscribers of its own bus (the emitting thread remembers its last route).
#[test]
fn the_last_route_a_thread_used_follows_subscriptions_and_buses() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let on = |bus: &Bus, i: usize| {
        let log = log.clone();
        bus.subscribe("task.done", move |_: &Event| log.lock().unwrap().push(i))
            .unwrap()
    };
    let (a, b) = (Bus::new(), Bus::new());
    on(&a, 1);
    assert_eq!(delivered_to(&a, &log, "task.done"), [1]);
    assert_eq!(delivered_to(&b, &log, "task.done"), Vec::<usize>::new());
    on(&b, 2);
    assert_eq!(delivered_to(&a, &log, "task.done"), [1]);
    assert_eq!(delivered_to(&b, &log, "task.done"), [2]);
    let three = on(&a, 3);
    assert_eq!(delivered_to(&a, &log, "task.done"), [1, 3]);
    assert_eq!(delivered_to(&a, &log, "task.other"), Vec::<usize>::new());
    assert_eq!(delivered_to(&a, &log, "task.done"), [1, 3]);
    assert!(a.unsubscribe(three));
    assert_eq!(delivered_to(&a, &log, "task.done"), [1]);

    // Another thread subscribing is seen by this thread's next emit.
    let a2 = a.clone();
    let log2 = log.clone();
    std::thread::spawn(move || {
        a2.subscribe("task.*", move |_: &Event| log2.lock().unwrap().push(4))
            .unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(delivered_to(&a, &log, "task.done"), [1, 4]);
    assert_eq!(delivered_to(&b, &log, "task.done"), [2]);
}

/// What a thread remembers of its last route does not keep a dropped bus's
/// handlers, and what they own, alive.
#[test]
fn a_dropped_bus_releases_its_handlers_after_emits() {
    let owned = Arc::new(());
    let bus = Bus::new();
    let held = owned.clone();
    bus.subscribe("task.done", move |_: &Event| {
        let _ = &held;
    })
    .unwrap();
    bus.emit("task.done", json!(null)).unwrap();
    bus.emit("task.done", json!(null)).unwrap();
    assert_eq!(Arc::strong_count(&owned), 2);
    drop(bus);
    assert_eq!(Arc::strong_count(&owned), 1);
}

/// A route still in use elsewhere (a handler running on another thread
/// holds it) is not reused by an emit after a new subscription: the new
/// subscriber gets the event.
#[test]
fn a_route_in_use_elsewhere_is_not_reused_after_subscribing() {
    use std::sync::mpsc;
    let bus = Bus::new();
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let first = Arc::new(Mutex::new(0));
    let f = first.clone();
    bus.subscribe("task.done", move |e: &Event| {
        *f.lock().unwrap() += 1;
        if e.data()["hold"] == json!(true) {
            entered_tx.send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
        }
    })
    .unwrap();
    let b = bus.clone();
    let holder = std::thread::spawn(move || b.emit("task.done", json!({ "hold": true })));
    entered.recv().unwrap();
    // The other thread's dispatch holds the route; this thread looks it up.
    bus.emit("task.done", json!({ "hold": false })).unwrap();
    let second = Arc::new(Mutex::new(0));
    let s = second.clone();
    bus.subscribe("task.*", move |_: &Event| *s.lock().unwrap() += 1)
        .unwrap();
    bus.emit("task.done", json!({ "hold": false })).unwrap();
    assert_eq!(*second.lock().unwrap(), 1);
    release.send(()).unwrap();
    holder.join().unwrap().unwrap();
    assert_eq!(*first.lock().unwrap(), 3);
}
