//! A model-based test of the whole: a proptest state machine drives a bus
//! with a journal, streams under each overflow policy, sync and async
//! handlers that sometimes fail or panic, a persistent dead letter queue,
//! subscribe/unsubscribe, restarts, injected I/O faults and torn tails, and
//! after every step compares the bus with a plain reference model
//! (`model.rs`): the acknowledged events on disk and in order, the retention
//! windows, each subscriber's `offered == delivered + dropped` by reason,
//! and the dead letters by reason.
//!
//! `NERVE_MODEL_CASES` (default 256) and `NERVE_MODEL_STEPS` (default 40, the
//! longest sequence) run more (through `cargo test`: nextest ends a test
//! after 180 s). Failures shrink to a short sequence of steps;
//! their seeds are kept in `main.proptest-regressions` beside this file and
//! replayed first on every run. `NERVE_MODEL_DEBUG=1` prints the journal's
//! files and their line numbers after each step.

mod model;
mod ops;
mod system;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use crate::ops::Op;
use crate::system::System;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cases() -> u32 {
    env("NERVE_MODEL_CASES", 256)
}

fn steps() -> usize {
    env("NERVE_MODEL_STEPS", 40) as usize
}

/// The generator's side: steps are chosen without looking at the state (a
/// step on something that does not exist does nothing), so that any shrunk
/// sequence is still valid.
struct Steps;

impl ReferenceStateMachine for Steps {
    type State = ();
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Self::State> {
        Just(()).boxed()
    }

    fn transitions(_: &Self::State) -> BoxedStrategy<Self::Transition> {
        ops::op()
    }

    fn apply(state: Self::State, _: &Self::Transition) -> Self::State {
        state
    }
}

struct WholeBus;

impl StateMachineTest for WholeBus {
    type SystemUnderTest = System;
    type Reference = Steps;

    fn init_test(_: &()) -> System {
        System::new()
    }

    fn apply(mut system: System, _: &(), op: Op) -> System {
        system.apply(&op);
        system
    }

    fn check_invariants(system: &System, _: &()) {
        system.check();
    }

    fn teardown(system: System, _: ()) {
        system.finish();
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 4096,
        .. Config::default()
    })]

    #[test]
    fn the_bus_agrees_with_its_model(sequential 1..steps() => WholeBus);
}
