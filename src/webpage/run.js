// One run: what the history says of it (trigger, times, outcome, exit, reason, its tries) and its log, which
// streams while the run lives (server-sent events of the log route) and ends with the run's outcome.
import { getJSON, stream, seg } from './api.js';
import { el, when, span, exitText } from './format.js';
import { jobAction } from './actions.js';

export function runView(main, [job, number]) {
  const facts = el('dl', { class: 'facts' });
  const tries = el('div', { class: 'table-wrap' });
  const log = el('pre', { class: 'log', id: 'log', tabindex: '0', 'aria-label': 'the run\'s output', 'data-state': 'loading' });
  const logState = el('span', { class: 'note', id: 'log-state' });
  const back = el('a', { href: `#/history/${encodeURIComponent(job || '')}` }, `history of ${job}`);
  main.append(
    el('div', { class: 'bar' }, el('h2', {}, `${job} #${number}`), back,
      el('button', { type: 'button', onclick: () => jobAction(job, 'trigger') }, 'Trigger again'),
      el('button', { type: 'button', onclick: () => jobAction(job, 'stop') }, 'Stop')),
    facts, tries, el('div', { class: 'bar' }, el('h2', {}, 'Log'), logState), log);

  const path = `/api/v1/jobs/${seg(job || '')}/runs/${seg(number || '')}`;
  async function read() {
    try {
      const { body } = await getJSON(path);
      describe(facts, body.run);
      tries.replaceChildren(triesTable(body.tries));
    } catch (e) {
      facts.replaceChildren(el('p', { class: 'bad' }, e.message));
    }
  }

  const ending = new AbortController();
  async function follow() {
    logState.textContent = 'following…';
    try {
      await stream(`${path}/log?follow=true`, (type, data) => {
        if (type === 'end') {
          log.dataset.state = 'ended';
          logState.textContent = `the run ended: ${data}`;
          read();
          return;
        }
        log.dataset.state = 'streaming';
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append(`${data}\n`);
        if (atBottom) log.scrollTop = log.scrollHeight;
      }, ending.signal);
      if (!log.textContent) log.textContent = '(it printed nothing)';
    } catch (e) {
      if (e.name !== 'AbortError') logState.textContent = `the log cannot be read: ${e.message}`;
    }
  }
  read().then(follow);
  return { stop() { ending.abort(); } };
}

function describe(facts, r) {
  const rows = [
    ['Outcome', el('span', { class: r.outcome === 'succeeded' ? 'ok' : r.outcome === 'running' ? '' : 'bad', id: 'run-outcome' }, exitText(r))],
    ['Reason', r.reason || '—'],
    ['Trigger', r.trigger || '—'],
    ['Scheduled', when(r.scheduled) || '—'],
    ['Started', when(r.started) || '—'],
    ['Ended', when(r.ended) || '—'],
    ['Duration', r.duration_ms != null ? span(r.duration_ms) : '—'],
    ['Late by', r.lateness_ms != null ? span(r.lateness_ms) : '—'],
    ['Try', String(r.attempt)],
    ['Catch-up', r.catch_up ? 'yes (fell due while no runner was up)' : 'no'],
    ['Messages', r.messages != null ? String(r.messages) : '—'],
    ['Process', r.pid != null ? String(r.pid) : '—'],
  ];
  facts.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function triesTable(tries) {
  if (!tries || tries.length < 2) return el('span');
  return el('table', {},
    el('caption', { class: 'note' }, 'Tries'),
    el('thead', {}, el('tr', {}, ['Try', 'Started', 'Duration', 'Outcome', 'Reason'].map((t) => el('th', {}, t)))),
    el('tbody', {}, tries.map((t) => el('tr', {},
      el('td', {}, String(t.attempt)), el('td', {}, when(t.started)), el('td', {}, span(t.duration_ms)),
      el('td', {}, exitText(t)), el('td', {}, t.reason || '')))));
}
