// Channels: messages taken in, handed out, left waiting, and the rate in (from two readings of the status); a durable
// queue's store: messages it keeps not done, and its bytes on disk.
import { el } from './format.js';
import { state, listen, refresh } from './store.js';

const REFRESH = 2000;

export function channelsView(main) {
  const body = el('tbody');
  const note = el('p', { class: 'note' });
  main.append(el('h2', {}, 'Channels'), el('div', { class: 'table-wrap' }, el('table', { id: 'channels' },
    el('thead', {}, el('tr', {}, ['Channel', 'Kind', 'In', 'Out', 'Left', 'Rate in', 'Stored', 'On disk'].map((t, i) => el('th', { class: i > 1 ? 'num' : '' }, t)))),
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
        el('td', { class: 'num' }, String(c.left)), el('td', { class: 'num' }, rate),
        el('td', { class: 'num' }, c.store ? String(c.store.depth) : '–'),
        el('td', { class: 'num' }, c.store ? `${(c.store.bytes_on_disk / 1024).toFixed(1)} KiB` : '–'));
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
