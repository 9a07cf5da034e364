//! The steps the state machine takes, and how they are generated.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

/// Which events a subscription takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// `work.a`
    A,
    /// `work.b`
    B,
    /// `work.*`
    Any,
}

impl Pattern {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Pattern::A => "work.a",
            Pattern::B => "work.b",
            Pattern::Any => "work.*",
        }
    }

    /// Whether an event of type `kind` (`A` or `B`) matches.
    pub(crate) fn matches(self, kind: Pattern) -> bool {
        self == Pattern::Any || self == kind
    }
}

/// A handler's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sync,
    Async,
}

/// What a handler does with an event whose `bad` flag is set (until healed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Succeeds,
    Fails,
    Panics,
}

/// A stream's overflow policy. With one thread, an emit into a full `Block`
/// queue would wait forever, so before each emit the test reads from every
/// full `Block` stream the event matches until it has room, as its reader
/// thread would: what is checked is that `Block` loses nothing and keeps
/// order, not the waiting itself (`BlockTimeout` covers a wait that ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    DropNewest,
    DropOldest,
    Error,
    Block,
    BlockTimeout,
}

/// A file operation of the journal to make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Open,
    Write,
    Flush,
    Sync,
    Rename,
    Renumber,
    Remove,
}

/// One step. `pick`s choose among what exists when the step runs (modulo
/// its count), so that a shrunk sequence stays valid.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Emit {
        b: bool,
        bad: bool,
        count: u8,
    },
    Subscribe {
        kind: Kind,
        behaviour: Behaviour,
        pattern: Pattern,
    },
    Unsubscribe {
        pick: usize,
    },
    Heal {
        pick: usize,
    },
    OpenStream {
        pattern: Pattern,
        policy: Policy,
        capacity: usize,
    },
    Read {
        pick: usize,
        count: u8,
    },
    CloseStream {
        pick: usize,
    },
    Retry {
        pick: usize,
    },
    Fault {
        fault: Fault,
        times: u32,
        emits: u8,
    },
    /// Shut the bus down, close the journal, optionally cut the active
    /// file's last line (`torn`: how many bytes), and open everything again.
    Restart {
        torn: Option<u16>,
    },
}

fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![Just(Pattern::A), Just(Pattern::B), Just(Pattern::Any)]
}

pub(crate) fn op() -> BoxedStrategy<Op> {
    let kind = prop_oneof![Just(Kind::Sync), Just(Kind::Async)];
    let behaviour = prop_oneof![
        Just(Behaviour::Succeeds),
        Just(Behaviour::Fails),
        Just(Behaviour::Panics)
    ];
    let policy = prop_oneof![
        Just(Policy::DropNewest),
        Just(Policy::DropOldest),
        Just(Policy::Error),
        Just(Policy::Block),
        Just(Policy::BlockTimeout)
    ];
    let fault = prop_oneof![
        Just(Fault::Open),
        Just(Fault::Write),
        Just(Fault::Flush),
        Just(Fault::Sync),
        Just(Fault::Rename),
        Just(Fault::Renumber),
        Just(Fault::Remove)
    ];
    prop_oneof![
        8 => (any::<bool>(), any::<bool>(), 1u8..4)
            .prop_map(|(b, bad, count)| Op::Emit { b, bad, count }),
        3 => (kind, behaviour, pattern())
            .prop_map(|(kind, behaviour, pattern)| Op::Subscribe { kind, behaviour, pattern }),
        1 => any::<usize>().prop_map(|pick| Op::Unsubscribe { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Heal { pick }),
        2 => (pattern(), policy, 1usize..4)
            .prop_map(|(pattern, policy, capacity)| Op::OpenStream { pattern, policy, capacity }),
        2 => (any::<usize>(), 1u8..5).prop_map(|(pick, count)| Op::Read { pick, count }),
        1 => any::<usize>().prop_map(|pick| Op::CloseStream { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
        1 => (fault, 1u32..3, 1u8..4)
            .prop_map(|(fault, times, emits)| Op::Fault { fault, times, emits }),
        1 => proptest::option::of(1u16..400).prop_map(|torn| Op::Restart { torn }),
    ]
    .boxed()
}
