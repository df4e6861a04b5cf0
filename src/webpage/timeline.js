// The timeline: a Gantt of the runs of the last hour (or 15 minutes, 6 hours, a day), one lane per job, read
// from the history a page at a time. Zoom with the buttons or the + and - keys; a retry has an outline, a
// catch-up a dot before it.
import { getJSON, seg } from './api.js';
import { el, when, span } from './format.js';
import { listen } from './store.js';

const RANGES = [['15 min', 900e3], ['1 h', 3600e3], ['6 h', 6 * 3600e3], ['24 h', 86400e3]];
const LANE = 22;
const LABEL = 160;
const MAX_PAGES = 20;
const NS = 'http://www.w3.org/2000/svg';
const REDRAW = 3000;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

/** History rows that started within `since` ms of now, newest first (at most MAX_PAGES pages). */
async function rowsSince(since, job) {
  const from = Date.now() - since;
  const rows = [];
  let path = `/api/v1/history?limit=1000${job ? `&job=${seg(job)}` : ''}`;
  for (let page = 0; page < MAX_PAGES && path; page++) {
    const { body, response } = await getJSON(path);
    rows.push(...body);
    const oldest = body[body.length - 1];
    const cursor = response.headers.get('x-next-cursor');
    if (!cursor || !oldest || new Date(oldest.started || oldest.scheduled || 0).getTime() < from) break;
    path = `/api/v1/history?limit=1000${job ? `&job=${seg(job)}` : ''}&before=${cursor}`;
  }
  return rows.filter((r) => r.started && new Date(r.ended || Date.now()).getTime() >= from);
}

export function timelineView(main) {
  let range = 1;
  const buttons = RANGES.map(([label], i) => el('button', { type: 'button', 'aria-pressed': String(i === range), onclick: () => { range = i; draw(); } }, label));
  const holder = el('div', { class: 'timeline' });
  const note = el('p', { class: 'note' });
  main.append(el('div', { class: 'bar' }, el('h2', {}, 'Timeline'), ...buttons,
    el('span', { class: 'note' }, 'zoom: + and −')), holder, note);

  let drawing = false;
  async function draw() {
    if (drawing) return;
    drawing = true;
    buttons.forEach((b, i) => b.setAttribute('aria-pressed', String(i === range)));
    try {
      const since = RANGES[range][1];
      const rows = await rowsSince(since);
      holder.replaceChildren(chart(rows, since));
      note.textContent = `${rows.length} runs in the last ${RANGES[range][0]}; hover a bar for its run, click it to open it.`;
    } catch (e) {
      note.textContent = `cannot read the history: ${e.message}`;
    }
    drawing = false;
  }

  const onKey = (e) => {
    if (e.target.matches('input, select, textarea')) return;
    if (e.key === '+' || e.key === '=') { range = Math.max(0, range - 1); draw(); }
    if (e.key === '-') { range = Math.min(RANGES.length - 1, range + 1); draw(); }
  };
  document.addEventListener('keydown', onKey);
  let pending = null;
  const stop = listen((kind, record) => {
    if (kind !== 'event' || !record.event.startsWith('run.')) return;
    clearTimeout(pending);
    // Drawn again a while after the runs change, not for each: each drawing reads the history again.
    pending = setTimeout(draw, REDRAW);
  });
  draw();
  return { stop() { stop(); clearTimeout(pending); document.removeEventListener('keydown', onKey); } };
}

function chart(rows, since) {
  const now = Date.now();
  const from = now - since;
  const jobs = [...new Set(rows.map((r) => r.job))].sort();
  const width = Math.max(600, document.getElementById('view').clientWidth - 8);
  const plot = width - LABEL - 10;
  const x = (t) => LABEL + Math.max(0, Math.min(plot, ((t - from) / since) * plot));
  const height = 24 + jobs.length * LANE;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, height, role: 'img', 'aria-label': `runs of the last ${span(since)}` });
  for (let i = 0; i <= 6; i++) {
    const t = from + (since * i) / 6;
    root.append(svg('line', { class: 'grid', x1: x(t), x2: x(t), y1: 14, y2: height }),
      svg('text', { class: 'axis', x: x(t), y: 11, 'text-anchor': i === 0 ? 'start' : i === 6 ? 'end' : 'middle' },
        new Date(t).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })));
  }
  jobs.forEach((job, lane) => {
    const y = 20 + lane * LANE;
    root.append(svg('text', { class: 'lane-name', x: 0, y: y + 14 }, job.length > 24 ? `${job.slice(0, 23)}…` : job));
    for (const r of rows.filter((row) => row.job === job)) {
      const start = new Date(r.started).getTime();
      const end = r.ended ? new Date(r.ended).getTime() : now;
      const x1 = x(start);
      const w = Math.max(2, x(end) - x1);
      const link = svg('a', { href: `#/run/${encodeURIComponent(r.job)}/${r.run}` });
      link.append(svg('rect', { class: `span ${r.outcome}${r.attempt > 1 ? ' retry' : ''}`, x: x1, y: y + 3, width: w, height: LANE - 6, rx: 2 },
        svg('title', {}, `${r.job}#${r.run} ${r.outcome}${r.attempt > 1 ? ` (try ${r.attempt})` : ''}${r.catch_up ? ' (catch-up)' : ''}\n${when(r.started)} · ${span(r.duration_ms ?? end - start)}`)));
      if (r.catch_up) link.append(svg('circle', { class: 'catch-up', cx: x1 - 4, cy: y + LANE / 2, r: 3 }));
      root.append(link);
    }
  });
  root.append(svg('line', { class: 'now', x1: x(now), x2: x(now), y1: 14, y2: height }));
  if (!jobs.length) root.append(svg('text', { class: 'axis', x: LABEL, y: 40 }, 'no runs in this time'));
  return root;
}
