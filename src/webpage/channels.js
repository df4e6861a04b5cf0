// Channels: messages taken in, handed out, left waiting, and the rate in (from two readings of the status).
import { el } from './format.js';
import { state, listen, refresh } from './store.js';

const REFRESH = 2000;

export function channelsView(main) {
  const body = el('tbody');
  const note = el('p', { class: 'note' });
  main.append(el('h2', {}, 'Channels'), el('div', { class: 'table-wrap' }, el('table', { id: 'channels' },
    el('thead', {}, el('tr', {}, ['Channel', 'Kind', 'In', 'Out', 'Left', 'Rate in'].map((t, i) => el('th', { class: i > 1 ? 'num' : '' }, t)))),
    body)), note);
  let before = null;
  function draw() {
    if (!state.status) return;
    const now = { at: state.read, counts: new Map(state.status.channels.map((c) => [c.channel, c.in])) };
    const seconds = before ? (now.at - before.at) / 1000 : 0;
    body.replaceChildren(...state.status.channels.map((c) => {
      const prior = before && before.counts.get(c.channel);
      const rate = seconds > 0 && prior != null ? `${((c.in - prior) / seconds).toFixed(1)}/s` : '…';
      return el('tr', { 'data-channel': c.channel }, el('td', {}, c.channel), el('td', {}, c.kind),
        el('td', { class: 'num' }, String(c.in)), el('td', { class: 'num' }, String(c.out)),
        el('td', { class: 'num' }, String(c.left)), el('td', { class: 'num' }, rate));
    }));
    note.textContent = state.status.channels.length ? '' : 'this workflow has no channels';
    if (!before || now.at - before.at >= REFRESH / 2) before = now;
  }
  const stop = listen((kind) => kind === 'status' && draw());
  const timer = setInterval(refresh, REFRESH);
  draw();
  refresh();
  return { stop() { stop(); clearInterval(timer); } };
}
