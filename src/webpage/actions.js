// The buttons that change something: each is a POST to the API, and its answer is shown as the API gave it.
import { post, seg, token } from './api.js';
import { refresh } from './store.js';

function show(method, path, status, body) {
  const answer = document.getElementById('answer');
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  answer.textContent = `${method} ${path} → ${status} ${text}`;
  answer.classList.toggle('bad', status >= 400);
  answer.dataset.status = String(status);
  if (status === 401 || status === 403) {
    answer.textContent += token.get() ? '' : '\n(no token given: paste it in the Token field, or open the address `flowrun ui` printed)';
  }
}

export async function act(path) {
  try {
    const { status, body } = await post(path);
    show('POST', path, status, body);
    refresh();
    return { status, body };
  } catch (e) {
    show('POST', path, 0, e.message);
    return { status: 0, body: e.message };
  }
}

export const jobAction = (job, what) => act(`/api/v1/jobs/${seg(job)}/${what}`);
