// History with filters: a job, an outcome, since when, all applied by the API, which gives the history newest
// first a page at a time.
import { getJSON, seg } from './api.js';
import { el, when, span, exitText } from './format.js';
import { state, refresh, listen } from './store.js';

const OUTCOMES = ['', 'running', 'succeeded', 'failed', 'timeout', 'stopped', 'spawn-failed', 'interrupted', 'skipped', 'missed', 'unhealthy'];
const SINCE = [['', 'any time'], ['3600', 'the last hour'], ['86400', 'the last day'], ['604800', 'the last week']];
const WANT = 100;
const MAX_PAGES = 10;

export function historyView(main, [job]) {
  const jobSelect = el('select', { 'aria-label': 'job' }, el('option', { value: '' }, 'every job'));
  const outcome = el('select', { 'aria-label': 'outcome' }, OUTCOMES.map((o) => el('option', { value: o }, o || 'any outcome')));
  const since = el('select', { 'aria-label': 'since' }, SINCE.map(([v, t]) => el('option', { value: v }, t)));
  const body = el('tbody');
  const more = el('button', { type: 'button', hidden: true }, 'More');
  const note = el('p', { class: 'note' });
  main.append(el('div', { class: 'bar' }, el('h2', {}, 'History'), jobSelect, outcome, since),
    el('div', { class: 'table-wrap' }, el('table', { id: 'history' },
      el('thead', {}, el('tr', {}, ['Run', 'Outcome', 'Trigger', 'Started', 'Duration', 'Reason'].map((t) => el('th', {}, t)))),
      body)), note, more);

  const fillJobs = () => {
    const names = state.status ? state.status.jobs.map((j) => j.job) : [];
    if (job && !names.includes(job)) names.unshift(job);
    jobSelect.replaceChildren(el('option', { value: '' }, 'every job'), ...names.map((n) => el('option', { value: n }, n)));
    jobSelect.value = job || '';
  };
  refresh().then(fillJobs);
  fillJobs();

  let cursor = null;
  let generation = 0;
  async function load(fresh) {
    const mine = fresh ? ++generation : generation;
    if (fresh) { body.replaceChildren(); cursor = null; }
    let found = 0;
    let ended = false;
    note.textContent = 'reading…';
    try {
      for (let page = 0; page < MAX_PAGES && found < WANT && !ended; page++) {
        const q = `limit=${WANT}${jobSelect.value ? `&job=${seg(jobSelect.value)}` : ''}`
          + `${outcome.value ? `&outcome=${seg(outcome.value)}` : ''}${since.value ? `&since=${since.value}s` : ''}`
          + `${cursor ? `&before=${cursor}` : ''}`;
        const { body: rows, response } = await getJSON(`/api/v1/history?${q}`);
        if (mine !== generation) return;
        for (const r of rows) {
          body.append(line(r));
          found++;
        }
        cursor = response.headers.get('x-next-cursor');
        if (!cursor) ended = true;
      }
      note.textContent = body.children.length ? `${body.children.length} rows` : 'no run matches';
    } catch (e) {
      note.textContent = `cannot read the history: ${e.message}`;
    }
    more.hidden = ended;
  }
  for (const s of [jobSelect, outcome, since]) s.addEventListener('change', () => load(true));
  let paged = false;
  more.addEventListener('click', () => { paged = true; load(false); });
  // New runs appear at the top by themselves, unless the reader went further down (More).
  let pending = null;
  const stop = listen((kind, record) => {
    if (kind !== 'event' || paged || !['run.exit', 'run.skipped', 'run.missed'].includes(record.event)) return;
    clearTimeout(pending);
    pending = setTimeout(() => load(true), 1000);
  });
  load(true);
  return { stop() { stop(); clearTimeout(pending); } };
}

function line(r) {
  const name = r.run != null
    ? el('a', { href: `#/run/${encodeURIComponent(r.job)}/${r.run}` }, `${r.job}#${r.run}`)
    : el('span', {}, r.job);
  return el('tr', { 'data-outcome': r.outcome },
    el('td', {}, name),
    el('td', { class: r.outcome === 'succeeded' ? 'ok' : ['running', 'skipped', 'missed', 'stopped'].includes(r.outcome) ? '' : 'bad' }, exitText(r)),
    el('td', {}, r.trigger),
    el('td', { title: r.started || r.scheduled || '' }, when(r.started || r.scheduled)),
    el('td', { class: 'num' }, r.duration_ms != null ? span(r.duration_ms) : ''),
    el('td', {}, r.reason || (r.count > 1 ? `${r.count} firings` : '')));
}
