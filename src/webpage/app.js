// The page's shell: the token from the address (`#token=...`, then taken out of the address bar), the views by
// the address's fragment (#/jobs, #/timeline, #/history, #/channels, #/graph, #/runners, #/run/JOB/N), the event
// stream.
import { token } from './api.js';
import { act } from './actions.js';
import { follow, poll, refresh, state, listen } from './store.js';
import { jobsView } from './jobs.js';
import { timelineView } from './timeline.js';
import { runView } from './run.js';
import { historyView } from './history.js';
import { channelsView } from './channels.js';
import { graphView } from './graph.js';
import { probeCluster, runnersView } from './runners.js';

const views = {
  jobs: jobsView,
  timeline: timelineView,
  history: historyView,
  channels: channelsView,
  graph: graphView,
  runners: runnersView,
  run: runView,
};

function takeToken() {
  const m = location.hash.match(/^#token=([^&]*)/);
  if (!m) return;
  token.set(decodeURIComponent(m[1]));
  // The token leaves the address bar (and so bookmarks, screenshots and the history list).
  history.replaceState(null, '', `${location.pathname}${location.search}#/jobs`);
}

let current = null;

function route() {
  // A token given in the address later (pasted into an open page) is taken as at the start.
  if (location.hash.startsWith('#token=')) { takeToken(); location.reload(); return; }
  const [name, ...args] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const view = views[name] || views.jobs;
  for (const a of document.querySelectorAll('nav a')) {
    const on = a.dataset.view === (views[name] ? name : 'jobs');
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (current && current.stop) current.stop();
  const main = document.getElementById('view');
  main.replaceChildren();
  main.dataset.view = views[name] ? name : 'jobs';
  current = view(main, args) || null;
}

function header() {
  listen((kind) => {
    if (kind !== 'status') return;
    const h1 = document.getElementById('workflow');
    if (state.status) {
      h1.textContent = state.status.workflow;
      document.title = `${state.status.workflow} · flowrun`;
    }
  });
  const live = document.getElementById('live');
  follow((on, why) => {
    live.className = `live ${on}`;
    live.textContent = on === 'on' ? 'live' : 'disconnected';
    live.title = why || 'the event stream';
  });
  document.getElementById('reload').addEventListener('click', () => act('/api/v1/reload'));
  const form = document.getElementById('token-form');
  const input = document.getElementById('token');
  input.value = token.get();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    token.set(input.value.trim());
    // Everything is read again with it, the event stream too.
    location.reload();
  });
}

takeToken();
header();
window.addEventListener('hashchange', route);
route();
refresh();
poll();
probeCluster();
