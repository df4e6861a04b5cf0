//! Reload (SPEC §5): a new plan applied to a running engine. Indices stay stable: jobs, channels and executors of
//! the old plan keep their places (removed ones stay as `retired` entries that never fire), new ones are appended,
//! and the new plan's references are renumbered into that order. So live runs, queued firings and channel queues
//! keep pointing at the right things, and only what changed is touched:
//! - new jobs are scheduled; removed jobs fire no more and their live runs end as at shutdown;
//! - changed jobs take their new definition from their next firing (a time trigger left as it was keeps its
//!   place on its grid: it resumes after its last handled firing);
//! - channels keep their waiting messages when their kind is unchanged.

use serde::Serialize;
use tokio::sync::oneshot;

use crate::plan::{Plan, Trigger};

/// What the control API hands the engine.
pub enum Reload {
    /// A validated plan, to apply.
    Apply {
        plan: Box<Plan>,
        reply: oneshot::Sender<Result<Applied, String>>,
    },
    /// The new text has errors (its report was rendered by the caller): said as an event, nothing changes.
    Rejected {
        errors: usize,
        /// The first problem, one line (`file:line:col: message`).
        summary: String,
        report: String,
    },
}

/// What a reload changed, by job name.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Applied {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// Where each new item goes in the merged list (`merged` starts as the old list): the place of the old item of
/// the same name, else a new place at the end (the new item is appended there).
pub(super) fn places<T: Clone>(
    merged: &mut Vec<T>,
    new: &[T],
    name: impl Fn(&T) -> &str,
) -> Vec<usize> {
    let mut at: std::collections::HashMap<String, usize> = merged
        .iter()
        .enumerate()
        .map(|(i, x)| (name(x).to_string(), i))
        .collect();
    new.iter()
        .map(|x| match at.get(name(x)) {
            Some(&k) => k,
            None => {
                merged.push(x.clone());
                at.insert(name(x).to_string(), merged.len() - 1);
                merged.len() - 1
            }
        })
        .collect()
}

/// A job of the new plan with its executor, channels and upstream jobs numbered as in the merged plan.
pub(super) fn renumbered(
    j: &crate::plan::Job,
    ex_map: &[usize],
    ch_map: &[usize],
    job_map: &[usize],
) -> crate::plan::Job {
    let mut job = j.clone();
    job.executor = ex_map[job.executor];
    job.stdin = job.stdin.map(|c| ch_map[c]);
    job.stdout = job.stdout.map(|c| ch_map[c]);
    job.dead_letter = job.dead_letter.map(|c| ch_map[c]);
    for t in &mut job.triggers {
        match t {
            Trigger::After { jobs: ups, .. } => ups.iter_mut().for_each(|u| *u = job_map[*u]),
            Trigger::Each { channel, .. } => *channel = ch_map[*channel],
            Trigger::Start | Trigger::Time { .. } => {}
        }
    }
    job
}

/// The merged channels, the index of each new channel among them, and those to rebuild (their kind changed).
pub(super) type MergedChannels = (Vec<crate::plan::Channel>, Vec<usize>, Vec<usize>);
