//! Retrying a dead letter: its event goes again to the subscriptions that
//! failed, through the same [`deliver`](Dispatcher::deliver) as an emit, or,
//! for an entry that belongs to no subscription, through the whole bus.

use std::sync::Arc;

use futures::future::BoxFuture;
use nerve_core::Event;
use nerve_core::correlation;

use crate::dead_letter::{DeadLetter, Redeliver};
use crate::dispatch::{Deliveries, Dispatcher, WaitMode};
use crate::reentry::while_retrying;
use crate::report::{Outcome, Waiter};
use crate::subscribe::SubscriptionId;
use crate::subscription::{HandlerKind, Subscription};

impl Redeliver for Dispatcher {
    fn redeliver<'a>(&'a self, entry: &'a DeadLetter) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(redeliver(self, entry))
    }
}

/// Redelivers a dead letter's event: to the subscriptions that failed, or,
/// for an entry that belongs to none, through the whole bus. `Err` with the
/// failure's text.
async fn redeliver(bus: &Dispatcher, entry: &DeadLetter) -> Result<(), String> {
    if bus.gate.is_closed() {
        return Err("the bus is shut down".to_owned());
    }
    let targets: Vec<SubscriptionId> = if entry.targets.is_empty() {
        entry.subscription_id.into_iter().collect()
    } else {
        entry.targets.clone()
    };
    if targets.is_empty() {
        return re_emit(bus, entry.event.clone()).await;
    }
    for id in targets {
        let sub = find_target(bus, id, entry)
            .ok_or_else(|| format!("subscription {id} no longer exists"))?;
        match deliver_again(bus, &sub, &entry.event).await {
            Outcome::Delivered => {}
            other => return Err(other.error().unwrap_or_default()),
        }
    }
    Ok(())
}

/// The subscription a retry goes to: the same id with the same name; for
/// an entry restored after a restart (ids start again), the subscription
/// with the entry's name. An entry with several targets
/// (`AllHandlersFailed`) names no subscription, only the targets' ids, so
/// a target is the subscription with that id, whatever its name; after a
/// restart those ids are the old bus's (a known limit: they may name no
/// subscription, or another one).
fn find_target(
    bus: &Dispatcher,
    id: SubscriptionId,
    entry: &DeadLetter,
) -> Option<Arc<Subscription>> {
    let routes = bus.routes.load();
    if !entry.targets.is_empty() && entry.subscription_id.is_none() {
        return routes.subscriptions().find(|s| s.id == id).cloned();
    }
    let name = entry.subscription_name.as_deref();
    let same = |s: &&Arc<Subscription>| s.id == id && s.name.as_deref() == name;
    if let Some(sub) = routes.subscriptions().find(same) {
        return Some(sub.clone());
    }
    let name = name?;
    routes
        .subscriptions()
        .filter(|s| s.name.as_deref() == Some(name))
        .min_by_key(|s| s.id)
        .cloned()
}

/// Emits `event` again and waits for every handler.
async fn re_emit(bus: &Dispatcher, event: Event) -> Result<(), String> {
    let (waiter, outcomes) = Waiter::new();
    let dispatched = while_retrying(|| bus.dispatch(event, Some((waiter, WaitMode::Async))))
        .map_err(|e| e.to_string())?;
    let report = dispatched
        .into_report(outcomes.await)
        .map_err(|e| e.to_string())?;
    if report.outcomes.is_empty() {
        return Err("no subscription matched the event".to_owned());
    }
    match report.outcomes.iter().find(|o| !o.outcome.is_delivered()) {
        Some(o) => Err(o.outcome.error().unwrap_or_default()),
        None => Ok(()),
    }
}

/// Delivers `event` to one subscription, as a retry, and waits for the
/// outcome. A retry's delivery is never dropped by a full queue (it is
/// queued as a terminal event would be) and never becomes a dead letter.
async fn deliver_again(bus: &Dispatcher, sub: &Arc<Subscription>, event: &Event) -> Outcome {
    let runtime = if sub.is_async() {
        match bus.runtime() {
            Some(runtime) => Some(runtime),
            None => return Outcome::Failed("no tokio runtime to run the async handler".into()),
        }
    } else {
        None
    };
    let (waiter, outcomes) = Waiter::new();
    let delivered = while_retrying(|| {
        let _ambient = correlation::enter_event(event);
        let mut deliveries = Deliveries::retry(waiter, runtime);
        let delivered = bus.deliver(sub, event, &mut deliveries);
        bus.settle(event, &mut deliveries);
        delivered
    });
    if let HandlerKind::Stream(_) = sub.kind {
        // A stream has no outcome to wait for: handed over is delivered.
        return match delivered {
            Ok(()) => Outcome::Delivered,
            Err(reason) => Outcome::Dropped(reason),
        };
    }
    match outcomes.await.into_iter().next() {
        Some(o) => o.outcome,
        None => Outcome::Abandoned,
    }
}
