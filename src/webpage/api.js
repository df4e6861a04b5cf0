// The page's one way to the API: every request carries the token (when there is one) in the Authorization
// header, never in a cookie, so another site cannot make the browser change anything.

const KEY = 'flowrun-token';

export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (value) => value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY),
};

/** An answer that was not 2xx: its status and the API's `error` text. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const t = token.get();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function failure(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: the text is the message */ }
  return new ApiError(response.status, (body && body.error) || text || response.statusText, body);
}

/** GET a JSON answer, with the response (for its headers). */
export async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return { body: await response.json(), response };
}

export async function getText(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.text();
}

/** POST with no body; the status and the body as the API gave them (a refusal is an answer, not a throw). */
export async function post(path) {
  const response = await fetch(path, { method: 'POST', headers: headers() });
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch { /* kept as text */ }
  return { status: response.status, body };
}

/**
 * Read server-sent events with fetch (EventSource cannot send a header): `onEvent(type, data)` for each, until
 * the stream ends or `signal` aborts. Resolves when it ends; rejects on a refusal or a broken connection.
 */
export async function stream(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      dispatch(buffer.slice(0, end), onEvent);
      buffer = buffer.slice(end + 2);
    }
  }
}

function dispatch(block, onEvent) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // a keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length) onEvent(type, data.join('\n'));
}

/** A path segment, encoded. */
export const seg = (s) => encodeURIComponent(s);
