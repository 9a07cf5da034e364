//! Validation: event names are checked as the bus accepts them, patterns as
//! it subscribes, and each error names the rule that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nerve_core::name::{MAX_NAME_LEN, Rule};
use nerve_core::query::HistoryQuery;
use nerve_core::{Event, PatternErrorReason, TypedEvent, json};
use nerve_router::{BuildError, Bus, EmitError, SubscribeError};
use serde::{Deserialize, Serialize};

/// The rule `bus` cites for `name`, or `None` if it accepts it.
fn rule_of(bus: &Bus, name: &str) -> Option<Rule> {
    match bus.emit(name, json!({})) {
        Ok(_) => None,
        Err(EmitError::Invalid(e)) => {
            assert_eq!(e.name(), name);
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("invalid event type {name:?}: ")),
                "{text}"
            );
            Some(e.rule().clone())
        }
        Err(other) => panic!("{name:?}: expected Invalid, got {other:?}"),
    }
}

fn bad_segment(segment: &str) -> Option<Rule> {
    Some(Rule::BadSegment {
        segment: segment.to_owned(),
    })
}

#[test]
fn names_with_validation_off_and_on() {
    let lax = Bus::new();
    let strict = Bus::builder().validate_names(true).build().unwrap();
    let explicit_off = Bus::builder().validate_names(false).build().unwrap();
    let too_long = "a".repeat(MAX_NAME_LEN + 1);
    #[rustfmt::skip]
    let cases: &[(&str, Option<Rule>, Option<Rule>)] = &[
        // name                 lax                       strict
        ("user.login",          None,                     None),
        ("chat.message.sent",   None,                     None),
        ("a1.b_2",              None,                     None),
        ("User.login",          None,                     bad_segment("User")),
        ("user.Login",          None,                     bad_segment("Login")),
        ("user.1login",         None,                     bad_segment("1login")),
        ("user-x.login",        None,                     bad_segment("user-x")),
        ("ping",                None,                     Some(Rule::TooFewSegments)),
        ("",                    Some(Rule::Empty),        Some(Rule::Empty)),
        ("user.",               Some(Rule::EmptySegment), Some(Rule::EmptySegment)),
        (".user",               Some(Rule::EmptySegment), Some(Rule::EmptySegment)),
        ("user..login",         Some(Rule::EmptySegment), Some(Rule::EmptySegment)),
        ("user.*",              Some(Rule::Wildcard),     Some(Rule::Wildcard)),
        (&too_long,             Some(Rule::TooLong { len: MAX_NAME_LEN + 1 }), Some(Rule::TooLong { len: MAX_NAME_LEN + 1 })),
    ];
    for (name, lax_rule, strict_rule) in cases {
        assert_eq!(rule_of(&lax, name), *lax_rule, "lax bus, {name:?}");
        assert_eq!(
            rule_of(&explicit_off, name),
            *lax_rule,
            "validate_names(false), {name:?}"
        );
        assert_eq!(rule_of(&strict, name), *strict_rule, "strict bus, {name:?}");
    }
}

#[test]
fn trailing_newlines_and_whitespace_are_always_rejected() {
    let lax = Bus::new();
    let strict = Bus::builder().validate_names(true).build().unwrap();
    for name in [
        "user.login\n",
        "user.login\r\n",
        "user.login ",
        " user.login",
        "user.log in",
        "user.login\t",
        "user.\u{a0}login",
        "user.login\u{0}",
    ] {
        for bus in [&lax, &strict] {
            assert_eq!(rule_of(bus, name), Some(Rule::Whitespace), "{name:?}");
        }
    }
    let err = lax.emit("user.login\n", json!({})).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid event type "user.login\n": name contains whitespace or a control character"#
    );
}

#[test]
fn the_strict_rule_messages_name_the_rule() {
    let bus = Bus::builder().validate_names(true).build().unwrap();
    let check = |name: &str, expected: &str| {
        let err = bus.emit(name, json!({})).unwrap_err();
        assert_eq!(err.to_string(), expected);
    };
    check(
        "User.login",
        r#"invalid event type "User.login": segment "User" must match [a-z][a-z0-9_]*"#,
    );
    check(
        "ping",
        r#"invalid event type "ping": name must have at least two segments, as in {domain}.{action}"#,
    );
}

#[test]
fn allowed_domains_restrict_names_and_turn_validation_on() {
    let bus = Bus::builder()
        .allowed_domains(["user", "chat"])
        .build()
        .unwrap();
    assert_eq!(rule_of(&bus, "user.login"), None);
    assert_eq!(rule_of(&bus, "chat.message.sent"), None);
    assert_eq!(
        rule_of(&bus, "billing.charge"),
        Some(Rule::DomainNotAllowed {
            domain: "billing".into(),
            allowed: vec!["chat".into(), "user".into()],
        })
    );
    let err = bus.emit("billing.charge", json!({})).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid event type "billing.charge": domain "billing" is not one of ["chat", "user"]"#
    );
    // The convention still holds inside allowed domains.
    assert_eq!(rule_of(&bus, "user.Login"), bad_segment("Login"));
    assert_eq!(rule_of(&bus, "user"), Some(Rule::TooFewSegments));
}

#[test]
fn invalid_allowed_domains_are_refused_at_build() {
    for domain in ["User", "a.b", "", "1st", "has space", "*"] {
        let err = Bus::builder()
            .allowed_domains([domain])
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::InvalidDomain(d) if d == domain),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("allowed domain {domain:?} must match [a-z][a-z0-9_]*")
        );
    }
    assert!(Bus::builder().allowed_domains(["a", "b_2"]).build().is_ok());
}

#[test]
fn a_rejected_event_reaches_nobody_and_is_counted() {
    let bus = Bus::builder().validate_names(true).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe("*", move |_: &Event| {
        c.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert!(bus.emit("Bad.name", json!({})).is_err());
    assert!(bus.emit("bad name", json!({})).is_err());
    // Built events pass the base rules but still meet the bus's strict ones.
    let built = Event::new("Bad.name", json!({})).unwrap();
    assert!(matches!(bus.emit_event(built), Err(EmitError::Invalid(_))));
    assert!(matches!(
        bus.emit_and_wait_blocking("Bad.name", json!({})),
        Err(EmitError::Invalid(_))
    ));

    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(bus.history(&HistoryQuery::new()).is_empty());
    let stats = bus.stats();
    assert_eq!((stats.events.rejected, stats.events.emitted), (4, 0));
}

#[test]
fn invalid_patterns_are_refused_at_subscribe() {
    let bus = Bus::new();
    #[rustfmt::skip]
    let cases: &[(&str, PatternErrorReason)] = &[
        ("",           PatternErrorReason::Empty),
        ("chat.",      PatternErrorReason::EmptySegment { index: 1 }),
        (".chat",      PatternErrorReason::EmptySegment { index: 0 }),
        ("a..b",       PatternErrorReason::EmptySegment { index: 1 }),
        ("ch*t",       PatternErrorReason::PartialWildcard { index: 0 }),
        ("chat.msg*",  PatternErrorReason::PartialWildcard { index: 1 }),
        ("**",         PatternErrorReason::PartialWildcard { index: 0 }),
        ("a. b",       PatternErrorReason::Whitespace),
        ("user.login\n", PatternErrorReason::Whitespace),
    ];
    for (pattern, reason) in cases {
        let err = bus.subscribe(*pattern, |_: &Event| {}).unwrap_err();
        let SubscribeError::Pattern(e) = &err else {
            panic!("{pattern:?}: expected Pattern, got {err:?}");
        };
        assert_eq!(e.pattern(), *pattern);
        assert_eq!(e.reason(), reason, "{pattern:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("invalid pattern {pattern:?}: ")),
            "{err}"
        );
        let err = bus
            .subscribe_async(*pattern, |_: Event| async {})
            .unwrap_err();
        assert!(matches!(err, SubscribeError::Pattern(_)), "{err:?}");
    }
    let long = "a".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(
        bus.subscribe(long.as_str(), |_: &Event| {}),
        Err(SubscribeError::Pattern(e)) if *e.reason() == PatternErrorReason::TooLong
    ));
    assert_eq!(bus.stats().subscriptions.total, 0, "nothing was subscribed");
}

#[test]
fn one_invalid_pattern_refuses_the_whole_subscription() {
    let bus = Bus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let err = bus
        .subscribe(["user.*", "bad pattern", "chat.*"], move |_: &Event| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    assert!(matches!(&err, SubscribeError::Pattern(e) if e.pattern() == "bad pattern"));
    bus.emit("user.login", json!({})).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(bus.stats().subscriptions.active, 0);

    let err = bus
        .subscribe(Vec::<&str>::new(), |_: &Event| {})
        .unwrap_err();
    assert!(matches!(err, SubscribeError::NoPatterns));
    assert_eq!(err.to_string(), "a subscription needs at least one pattern");
}

#[test]
fn a_typed_event_with_an_invalid_name_cannot_be_subscribed() {
    #[derive(Serialize, Deserialize)]
    struct Bad;
    impl TypedEvent for Bad {
        const NAME: &'static str = "bad name";
    }
    let bus = Bus::new();
    assert!(matches!(
        bus.subscribe_typed(|_: Bad| {}),
        Err(SubscribeError::Pattern(_))
    ));
    assert!(matches!(bus.emit_typed(&Bad), Err(EmitError::Invalid(_))));
}

#[test]
fn validation_errors_keep_their_source() {
    let bus = Bus::builder().validate_names(true).build().unwrap();
    let err = bus.emit("User.login", json!({})).unwrap_err();
    // `Invalid` is transparent: its message is the validation error's.
    let EmitError::Invalid(inner) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(err.to_string(), inner.to_string());
}
