// The runners of the runner's cluster (GET /api/v1/cluster, SPEC §9): shown only when the runner is in one (the
// route answers 404 otherwise). Each runner's id, host, pid, version, heartbeat age, live runs, and a mark for one
// that runs another text of the workflow file.
import { getJSON } from './api.js';
import { el, span } from './format.js';

const REFRESH = 2000;

/** Show the Runners link when the runner is in a cluster. */
export async function probeCluster() {
  try {
    await getJSON('/api/v1/cluster');
    const link = document.querySelector('nav a[data-view="runners"]');
    if (link) link.hidden = false;
  } catch { /* not in a cluster (404), or not now: no Runners section */ }
}

export function runnersView(main) {
  const title = el('h2', {}, 'Runners');
  const body = el('tbody');
  const note = el('p', { class: 'note' });
  main.append(title, el('div', { class: 'table-wrap' }, el('table', { id: 'runners' },
    el('thead', {}, el('tr', {}, ['Runner', 'Host', 'PID', 'Version', 'Heartbeat', 'Live runs', 'File']
      .map((t, i) => el('th', { class: i === 2 || i === 4 || i === 5 ? 'num' : '' }, t)))),
    body)), note);
  async function draw() {
    let doc;
    try {
      ({ body: doc } = await getJSON('/api/v1/cluster'));
    } catch (e) {
      note.textContent = e.status === 404 ? 'this runner is not in a cluster' : `cannot read the runners: ${e.message}`;
      return;
    }
    title.textContent = `Runners of cluster ${doc.cluster}`;
    body.replaceChildren(...doc.runners.map((r) => el('tr', { 'data-runner': r.id, class: r.id === doc.runner ? 'this' : '' },
      el('td', {}, r.id, r.id === doc.runner ? el('span', { class: 'note' }, ' (this one)') : null),
      el('td', {}, r.host), el('td', { class: 'num' }, String(r.pid)), el('td', {}, r.version),
      el('td', { class: 'num' }, `${span(r.heartbeat_age_ms)} ago`), el('td', { class: 'num' }, String(r.live_runs)),
      el('td', { title: `${r.file} (${r.file_hash})` }, r.file_differs
        ? el('span', { class: 'bad differs' }, 'differs: another text of the file') : 'same'))));
    note.textContent = doc.runners.length ? '' : 'no runner has a heartbeat';
  }
  const timer = setInterval(draw, REFRESH);
  draw();
  return { stop() { clearInterval(timer); } };
}
