// The workflow's graph, as the runner draws it (GET /api/v1/graph, SVG): a job opens its history; each job can
// be reached with Tab and opened with Enter.
import { getText } from './api.js';
import { el } from './format.js';

export function graphView(main) {
  const holder = el('div', { class: 'graph-view', id: 'graph' });
  const note = el('p', { class: 'note' }, 'Boxes are jobs with their triggers; solid arrows are channels (writer to reader), dashed ones `after` links.');
  main.append(el('h2', {}, 'Graph'), note, holder);
  getText('/api/v1/graph').then((text) => {
    // The runner's own SVG, with every name escaped there; parsed as SVG, not as HTML.
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    const svg = document.importNode(doc.documentElement, true);
    holder.replaceChildren(svg);
    for (const node of svg.querySelectorAll('.node')) {
      const open = () => { location.hash = `#/history/${encodeURIComponent(node.dataset.job)}`; };
      node.setAttribute('tabindex', '0');
      node.setAttribute('role', 'link');
      node.setAttribute('aria-label', `history of ${node.dataset.job}`);
      node.addEventListener('click', open);
      node.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
    }
  }).catch((e) => holder.replaceChildren(el('p', { class: 'bad' }, `cannot read the graph: ${e.message}`)));
}
