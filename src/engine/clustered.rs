//! The shell's side of a runner in a cluster (SPEC §9): the claimer and the heartbeat's take-overs answer through
//! the dispatcher's own messages; the consumers of the durable queues the cluster shares
//! fill this runner's queues.

use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

use super::channels::Channels;
use super::Msg;
use crate::cluster::claims::{Claimer, Reply};
use crate::plan::Plan;

/// Start the claimer and follow the cluster's ends; the heartbeat's take-overs come as messages too.
pub(super) fn link(
    link: crate::cluster::Link,
    tx: &UnboundedSender<Msg>,
) -> (Claimer, crate::cluster::Config) {
    let answers = tx.clone();
    let reply: Reply = Arc::new(move |key, answer| {
        let _ = answers.send(Msg::Claimed { key, answer });
    });
    let claimer = Claimer::start(&link.config, link.client.clone(), reply, link.up);
    // The heartbeat's thread tells of runs it took over from a runner that stopped answering.
    let taken = tx.clone();
    *link.on_take_over.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(move |rows| {
        let _ = taken.send(Msg::TakenOver(rows));
    }));
    (claimer, link.config)
}

/// This runner's readers of the durable queues its cluster shares read through its consumers (a channel with no
/// reader here consumes nothing).
pub(super) fn consume(
    consumers: super::Consumers,
    channels: &Channels,
    plan: &Plan,
    config: &crate::cluster::Config,
    tx: &UnboundedSender<Msg>,
) {
    for (c, consumer) in consumers {
        let rt = &channels.all[c];
        let Some(queue) = rt
            .queues
            .first()
            .filter(|_| !plan.channels[c].readers.is_empty())
        else {
            continue;
        };
        let wake = tx.clone();
        super::consume::start(
            consumer,
            queue.clone(),
            config.lease,
            rt.stats.clone(),
            Arc::new(move || {
                let _ = wake.send(Msg::Wake(c));
            }),
        );
    }
}
