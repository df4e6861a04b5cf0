//! The workflow's graph as SVG (the web page's graph view, `GET /api/v1/graph`): jobs as boxes in columns by
//! their depth along the edges (channels from writer to reader, `after` links dashed), each with its triggers;
//! drawn here, with no layout library. Each job is a `<g class="node" data-job="NAME">`, so a page or a test can
//! find it.

use std::collections::VecDeque;
use std::fmt::Write;

use crate::graph::{after_edges, channel_edges, trigger_note};
use crate::plan::Plan;

const BOX_W: usize = 200;
const BOX_H: usize = 46;
const COL_GAP: usize = 110;
const ROW_GAP: usize = 22;
const MARGIN: usize = 16;
/// Characters of a trigger note shown in a box (the whole note is its tooltip).
const NOTE_CHARS: usize = 30;

/// An edge drawn: from, to, label, dashed (`after`).
struct Edge {
    from: usize,
    to: usize,
    label: String,
    dashed: bool,
}

pub fn svg(plan: &Plan) -> String {
    let mut edges: Vec<Edge> = channel_edges(plan)
        .into_iter()
        .map(|(from, to, label)| Edge {
            from,
            to,
            label,
            dashed: false,
        })
        .collect();
    edges.extend(after_edges(plan).into_iter().map(|(from, to)| Edge {
        from,
        to,
        label: "after".into(),
        dashed: true,
    }));
    let ranks = ranks(plan.jobs.len(), &edges);
    let places = places(&ranks);
    let columns = ranks.iter().copied().max().map_or(0, |r| r + 1);
    let rows = places.iter().map(|&(_, row)| row + 1).max().unwrap_or(0);
    let width = MARGIN * 2 + columns * BOX_W + columns.saturating_sub(1) * COL_GAP;
    let height = MARGIN * 2 + rows * (BOX_H + ROW_GAP);
    let mut out = String::with_capacity(256 * (plan.jobs.len() + edges.len()) + 1024);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"the jobs of {} and their links\">",
        escape(&plan.name)
    );
    out.push_str(STYLE);
    for edge in &edges {
        draw_edge(&mut out, edge, places[edge.from], places[edge.to]);
    }
    for (j, job) in plan.jobs.iter().enumerate() {
        draw_job(&mut out, &job.name, &trigger_note(plan, j), places[j]);
    }
    out.push_str("</svg>\n");
    out
}

/// Colours that follow the page's (or the system's) light or dark scheme; arrows take the line's colour.
const STYLE: &str = "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" class=\"arrowhead\"/></marker></defs>\
<style>.graph{font:12px system-ui,sans-serif}.graph rect{fill:#fff;stroke:#57606a;rx:6}.graph .name{font-weight:600;fill:#1f2328}\
.graph .note,.graph .label{fill:#57606a}.graph path.edge{fill:none;stroke:#8c959f;stroke-width:1.5}\
.graph path.dashed{stroke-dasharray:5 4}.graph .arrowhead{fill:#8c959f}\
@media (prefers-color-scheme:dark){.graph rect{fill:#161b22;stroke:#8b949e}.graph .name{fill:#e6edf3}\
.graph .note,.graph .label{fill:#8b949e}}</style>";

fn draw_job(out: &mut String, name: &str, note: &str, (col, row): (usize, usize)) {
    let (x, y) = origin(col, row);
    let short: String = match note.chars().count() > NOTE_CHARS {
        true => note.chars().take(NOTE_CHARS - 1).chain(['…']).collect(),
        false => note.to_string(),
    };
    let _ = write!(
        out,
        "<g class=\"node\" data-job=\"{n}\" transform=\"translate({x},{y})\"><title>{n}: {t}</title>\
         <rect width=\"{BOX_W}\" height=\"{BOX_H}\"/><text class=\"name\" x=\"10\" y=\"19\">{n}</text>\
         <text class=\"note\" x=\"10\" y=\"36\">{s}</text></g>",
        n = escape(name),
        t = escape(note),
        s = escape(&short),
    );
}

fn draw_edge(out: &mut String, edge: &Edge, from: (usize, usize), to: (usize, usize)) {
    let (fx, fy) = origin(from.0, from.1);
    let (tx, ty) = origin(to.0, to.1);
    let (x1, y1) = (fx + BOX_W, fy + BOX_H / 2);
    let (x2, y2) = (tx, ty + BOX_H / 2);
    // A link to the same column or back (a cycle, or a job after itself) bends out to the right and back.
    let bend = match x2 > x1 {
        true => (x2 - x1) / 2,
        false => COL_GAP,
    };
    let class = if edge.dashed { "edge dashed" } else { "edge" };
    let _ = write!(
        out,
        "<path class=\"{class}\" marker-end=\"url(#arrow)\" d=\"M{x1} {y1}C{} {y1} {} {y2} {x2} {y2}\"/>\
         <text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        x1 + bend,
        x2.saturating_sub(bend),
        (x1 + x2) / 2,
        (y1 + y2) / 2 - 4,
        escape(&edge.label)
    );
}

fn origin(col: usize, row: usize) -> (usize, usize) {
    (
        MARGIN + col * (BOX_W + COL_GAP),
        MARGIN + row * (BOX_H + ROW_GAP),
    )
}

/// Each job's column: its longest path from a job nothing leads to (Kahn's order; a cycle is broken at its
/// first job, which then counts as a start).
fn ranks(n: usize, edges: &[Edge]) -> Vec<usize> {
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut incoming = vec![0usize; n];
    for e in edges.iter().filter(|e| e.from != e.to) {
        next[e.from].push(e.to);
        incoming[e.to] += 1;
    }
    let mut rank = vec![0usize; n];
    let mut placed = vec![false; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&j| incoming[j] == 0).collect();
    let mut unplaced = 0;
    loop {
        while let Some(j) = ready.pop_front() {
            if std::mem::replace(&mut placed[j], true) {
                continue;
            }
            for &k in &next[j] {
                // A job placed already is where a cycle was broken: it stays a start.
                if !placed[k] {
                    rank[k] = rank[k].max(rank[j] + 1);
                }
                incoming[k] = incoming[k].saturating_sub(1);
                if incoming[k] == 0 {
                    ready.push_back(k);
                }
            }
        }
        // What is left sits on a cycle: start again from its first job.
        while unplaced < n && placed[unplaced] {
            unplaced += 1;
        }
        if unplaced == n {
            return rank;
        }
        ready.push_back(unplaced);
    }
}

/// Each job's (column, row): rows in the order of the file within each column.
fn places(ranks: &[usize]) -> Vec<(usize, usize)> {
    let mut filled: Vec<usize> = Vec::new();
    ranks
        .iter()
        .map(|&col| {
            if filled.len() <= col {
                filled.resize(col + 1, 0);
            }
            filled[col] += 1;
            (col, filled[col] - 1)
        })
        .collect()
}

/// Text for XML: the five characters with a meaning there, escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: usize, to: usize) -> Edge {
        Edge {
            from,
            to,
            label: String::new(),
            dashed: false,
        }
    }

    #[test]
    fn columns_follow_the_longest_path_and_a_cycle_still_ends() {
        assert_eq!(
            ranks(3, &[edge(0, 1), edge(1, 2), edge(0, 2)]),
            vec![0, 1, 2]
        );
        // 0 -> 1 -> 0 is a cycle: broken at 0; 2 stands alone.
        let r = ranks(3, &[edge(0, 1), edge(1, 0)]);
        assert_eq!(r[2], 0);
        assert_ne!(r[0], r[1]);
        assert_eq!(ranks(2, &[edge(1, 1)]), vec![0, 0]);
    }

    #[test]
    fn rows_fill_each_column_in_order() {
        assert_eq!(
            places(&[0, 1, 0, 1, 2]),
            vec![(0, 0), (1, 0), (0, 1), (1, 1), (2, 0)]
        );
    }

    #[test]
    fn text_is_escaped_for_xml() {
        assert_eq!(escape("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&#39; ");
    }
}
