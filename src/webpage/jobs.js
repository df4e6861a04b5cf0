// The jobs table: one row per job (state, last result and when, next fire, the last 20 runs as marks, success
// rate, actions). Only the rows in sight are made (a workflow of 10,000 jobs scrolls as one of ten); rows are
// made again when the status or a job's runs change.
import { el, when, ago, span } from './format.js';
import { state, listen, recentOf, loadRecent, refresh } from './store.js';
import { jobAction } from './actions.js';

const OVERSCAN = 8;

export function jobsView(main) {
  const filter = el('input', { type: 'search', placeholder: 'filter jobs', 'aria-label': 'filter jobs by name' });
  const count = el('span', { class: 'note' });
  const head = el('div', { class: 'head', role: 'row' },
    ['Job', 'State', 'Last', 'Next fire', 'Last 20 runs', 'Success', 'Actions']
      .map((t) => el('span', { role: 'columnheader' }, t)));
  const spacer = el('div', { class: 'spacer' });
  // The head scrolls with the rows (sticky at the top), so both have the same width, scroll bar or not.
  const scroller = el('div', { class: 'scroller', role: 'rowgroup' }, head, spacer);
  const table = el('div', { class: 'jobs', role: 'table', 'aria-label': 'jobs' }, scroller);
  main.append(el('div', { class: 'bar' }, el('h2', {}, 'Jobs'), filter, count), table);

  let jobs = [];
  let rowHeight = 34;
  let top = 0; // the head's height: rows start below it
  /** job -> its row in sight and what it was made from: a row whose job did not change is kept as it is. */
  const made = new Map();

  function select() {
    const all = state.status ? state.status.jobs : [];
    const words = filter.value.trim().toLowerCase();
    jobs = words ? all.filter((j) => j.job.toLowerCase().includes(words)) : all;
    count.textContent = state.status ? `${jobs.length} of ${all.length} jobs` : '';
    if (state.error && !state.status) count.textContent = `cannot read the status: ${state.error.message}`;
    rowHeight = parseFloat(getComputedStyle(table).getPropertyValue('--row')) || 34;
    top = head.offsetHeight;
    spacer.style.height = `${jobs.length * rowHeight}px`;
    draw();
  }

  function draw() {
    const first = Math.max(0, Math.floor((scroller.scrollTop - top) / rowHeight) - OVERSCAN);
    const last = Math.min(jobs.length, Math.ceil((scroller.scrollTop + scroller.clientHeight - top) / rowHeight) + OVERSCAN);
    const inSight = new Set();
    for (let i = first; i < last; i++) {
      const job = jobs[i];
      inSight.add(job.job);
      const was = made.get(job.job);
      const sig = signature(job);
      let row = was && was.row;
      if (!was || was.sig !== sig) {
        row = makeRow(job);
        if (was) replaceKeepingFocus(was.row, row); else scroller.append(row);
        made.set(job.job, { row, sig });
        if (!was) recentOf(job.job);
      }
      row.style.top = `${top + i * rowHeight}px`;
      row.setAttribute('aria-rowindex', String(i + 2));
    }
    for (const [name, { row }] of made) {
      if (!inSight.has(name)) { row.remove(); made.delete(name); }
    }
    // When the table first shows rows, for whoever measures the page (performance.getEntriesByName).
    if (made.size && !performance.getEntriesByName('flowrun-jobs-rows').length) performance.mark('flowrun-jobs-rows');
  }

  scroller.addEventListener('scroll', () => requestAnimationFrame(draw), { passive: true });
  filter.addEventListener('input', select);
  const stop = listen((kind) => {
    if (kind === 'status' || kind === 'recent') select();
  });
  const onResize = () => select();
  window.addEventListener('resize', onResize);
  select();
  refresh();
  loadRecent();
  return { stop() { stop(); window.removeEventListener('resize', onResize); } };
}

/** Ages in the rows ("5 s ago") move on by themselves: rows are made again at least this often. */
const AGES_EVERY = 10000;

/** What a row is made from: the job's status, its recent runs, and the age bucket. */
function signature(job) {
  const runs = (state.recent.get(job.job) || []).map((r) => `${r.run}:${r.outcome}:${r.duration_ms}`).join();
  return `${JSON.stringify(job)}|${runs}|${Math.floor(Date.now() / AGES_EVERY)}`;
}

/** Put a new row where the old was; focus stays on the control it was on (a keyboard user keeps their place). */
function replaceKeepingFocus(old, fresh) {
  const focused = old.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  old.replaceWith(fresh);
  if (focused) fresh.querySelector(`[data-action="${focused}"]`)?.focus();
}

function stateOf(job) {
  if (job.paused) return ['paused', job.paused_until ? `paused until ${when(job.paused_until)}` : 'paused'];
  if (job.running.length) return ['running', `running ${job.running.length > 1 ? `×${job.running.length}` : ''}`.trim()];
  if (job.retrying && job.retrying.length) return ['running', 'retrying'];
  if (job.waiting) return ['waiting', `waiting ${job.waiting}`];
  if (job.done) return ['done', 'done'];
  return ['idle', 'idle'];
}

/** Outcomes that are neither success nor failure. */
const NEUTRAL = new Set(['stopped', 'skipped', 'missed']);

function lastOf(job) {
  const rows = state.recent.get(job.job) || [];
  const ended = rows.find((r) => r.outcome !== 'running');
  const text = ended ? ended.outcome : job.last_exit || '—';
  const tone = ended
    ? (ended.outcome === 'succeeded' ? 'ok' : NEUTRAL.has(ended.outcome) ? 'muted' : 'bad')
    : job.last_exit ? (job.last_exit === 'exited 0' ? 'ok' : 'bad') : 'muted';
  const at = ended ? ended.ended || ended.started : null;
  return el('span', { class: `last ${tone}`, title: at ? when(at) : '' },
    text, at ? el('span', { class: 'muted' }, ` ${ago(at)}`) : null);
}

function marks(job) {
  const rows = (state.recent.get(job.job) || []).slice(0, 20).reverse();
  return el('span', { class: 'marks', 'aria-label': `last ${rows.length} runs` }, rows.map((r) => el('a', {
    class: `mark ${r.outcome}`,
    href: `#/run/${encodeURIComponent(r.job)}/${r.run}`,
    title: `#${r.run} ${r.outcome}${r.duration_ms != null ? ` in ${span(r.duration_ms)}` : ''}${r.started ? ` · ${when(r.started)}` : ''}`,
    'aria-label': `run ${r.run} ${r.outcome}`,
  })));
}

/** The share of the last 20 runs that ended and succeeded (stopped, skipped and missed runs count neither way). */
function rate(job) {
  const ended = (state.recent.get(job.job) || []).filter((r) => r.outcome !== 'running' && !NEUTRAL.has(r.outcome));
  if (!ended.length) return el('span', { class: 'muted rate' }, '—');
  const good = ended.filter((r) => r.outcome === 'succeeded').length;
  const pct = Math.round((100 * good) / ended.length);
  return el('span', { class: `rate ${pct === 100 ? 'ok' : pct < 50 ? 'bad' : ''}`, title: `${good} of the last ${ended.length} runs that ended succeeded` }, `${pct}%`);
}

function makeRow(job) {
  const [kind, text] = stateOf(job);
  const latest = (state.recent.get(job.job) || [])[0];
  const name = latest
    ? el('a', { href: `#/run/${encodeURIComponent(job.job)}/${latest.run}`, title: `${job.job}: its latest run` }, job.job)
    : el('span', {}, job.job);
  const button = (what, label) => el('button', {
    type: 'button', 'data-action': what, 'aria-label': `${label} ${job.job}`,
    onclick: () => jobAction(job.job, what),
  }, label);
  return el('div', { class: 'row', role: 'row', 'data-job': job.job, 'data-runs': String(job.runs) },
    el('span', { class: 'name', role: 'cell' }, name),
    el('span', { class: `state state-${kind}`, role: 'cell' }, text),
    el('span', { role: 'cell' }, lastOf(job)),
    el('span', { class: 'next', role: 'cell', title: job.next || '' }, job.next ? `${when(job.next)} (${ago(job.next)})` : '—'),
    el('span', { role: 'cell' }, marks(job)),
    el('span', { class: 'num', role: 'cell' }, rate(job)),
    el('span', { class: 'actions', role: 'cell' },
      button('trigger', 'Trigger'), button('stop', 'Stop'),
      job.paused ? button('resume', 'Resume') : button('pause', 'Pause')),
  );
}
