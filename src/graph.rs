//! `flowrun graph`: jobs as nodes, channels as labelled edges, `after` links dashed, triggers as notes.

use crate::plan::{Plan, Trigger};

pub(crate) fn trigger_note(plan: &Plan, job: usize) -> String {
    plan.jobs[job]
        .triggers
        .iter()
        .map(|t| plan.trigger_text(t))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writer -> reader edges of every channel, labelled `name (kind)`.
pub(crate) fn channel_edges(plan: &Plan) -> Vec<(usize, usize, String)> {
    let mut edges = Vec::new();
    for c in &plan.channels {
        for &w in &c.writers {
            for &r in &c.readers {
                edges.push((w, r, format!("{} ({})", c.name, c.kind.as_str())));
            }
        }
    }
    edges
}

pub(crate) fn after_edges(plan: &Plan) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    for (j, job) in plan.jobs.iter().enumerate() {
        for t in &job.triggers {
            if let Trigger::After { jobs, .. } = t {
                edges.extend(jobs.iter().map(|&u| (u, j)));
            }
        }
    }
    edges
}

pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (j, job) in plan.jobs.iter().enumerate() {
        out.push_str(&format!(
            "  j{j}[\"{}<br/><small>{}</small>\"]\n",
            job.name,
            trigger_note(plan, j).replace('"', "#quot;")
        ));
    }
    // Edge labels are quoted: brackets in an unquoted label (`readings (queue)`) are Mermaid syntax.
    for (w, r, label) in channel_edges(plan) {
        out.push_str(&format!("  j{w} -->|\"{label}\"| j{r}\n"));
    }
    for (u, d) in after_edges(plan) {
        out.push_str(&format!("  j{u} -.->|\"after\"| j{d}\n"));
    }
    out
}

pub fn dot(plan: &Plan) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
        plan.name
    );
    for (j, job) in plan.jobs.iter().enumerate() {
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\n{}\"];\n",
            job.name,
            job.name,
            trigger_note(plan, j).replace('"', "'")
        ));
    }
    for (w, r, label) in channel_edges(plan) {
        out.push_str(&format!(
            "  \"{}\" -> \"{}\" [label=\"{label}\"];\n",
            plan.jobs[w].name, plan.jobs[r].name
        ));
    }
    for (u, d) in after_edges(plan) {
        out.push_str(&format!(
            "  \"{}\" -> \"{}\" [style=dashed, label=\"after\"];\n",
            plan.jobs[u].name, plan.jobs[d].name
        ));
    }
    out.push_str("}\n");
    out
}
