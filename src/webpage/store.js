// What the views share: the runner's status (read again when an event says something changed, at most every
// STATUS_GAP ms, and every POLL ms for the next fire times), each job's recent runs, and the event stream.
import { getJSON, stream, seg } from './api.js';

const STATUS_GAP = 200;
const POLL = 5000;
const RECENT = 20;

export const state = {
  status: null,
  /** When the status was read (ms), for rates. */
  read: 0,
  /** job -> its last RECENT history rows, newest first. */
  recent: new Map(),
  error: null,
};

const listeners = new Set();
/** Call `fn(kind, detail)` on each change (`status`, `recent`, `event`); returns how to stop. */
export function listen(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function tell(kind, detail) {
  for (const fn of [...listeners]) fn(kind, detail);
}

let reading = null;
let again = false;
let lastRead = 0;
let lastCost = 0;
let timer = null;

/**
 * Read the status now, or soon (coalesced: one read in flight, and no more often than every STATUS_GAP, or three
 * times what the last read took: a workflow of 10,000 jobs busy with runs is not read back-to-back).
 */
export function refresh() {
  if (reading) { again = true; return reading; }
  const wait = Math.max(0, lastRead + Math.max(STATUS_GAP, 3 * lastCost) - Date.now());
  reading = new Promise((resolve) => setTimeout(resolve, wait)).then(async () => {
    const began = Date.now();
    try {
      const { body } = await getJSON('/api/v1/status');
      state.status = body;
      state.read = Date.now();
      state.error = null;
    } catch (e) {
      state.error = e;
    }
    lastRead = Date.now();
    lastCost = lastRead - began;
    reading = null;
    tell('status');
    if (again) { again = false; refresh(); }
  });
  return reading;
}

let loaded = null;
/** The recent runs of every job with runs among the newest 1000 rows (one request for the whole table). */
export function loadRecent() {
  if (!loaded) loaded = readNewest().catch(() => { /* each row reads its own runs instead */ });
  return loaded;
}

async function readNewest() {
  const { body } = await getJSON('/api/v1/history?limit=1000');
  const seen = new Map();
  for (const row of body) {
    if (row.run == null) continue;
    const list = seen.get(row.job) || [];
    if (list.length < RECENT) list.push(row);
    seen.set(row.job, list);
  }
  for (const [job, rows] of seen) state.recent.set(job, rows);
  tell('recent');
}

const asked = new Set();
const queue = [];
let inFlight = 0;
/** Reads of single jobs' runs at once, at most (the API has few store readers; scrolling must not flood it). */
const AT_ONCE = 4;

/** The recent runs of one job, read when its row is first shown (jobs quiet for a while are not in the 1000). */
export async function recentOf(job) {
  if (asked.has(job)) return;
  asked.add(job);
  await loadRecent();
  if (state.recent.has(job)) return;
  queue.push(job);
  pump();
}

function pump() {
  while (inFlight < AT_ONCE && queue.length) {
    const job = queue.pop(); // the row shown last first: that is where the reader is looking
    inFlight++;
    readRecent(job).finally(() => { inFlight--; pump(); });
  }
}

async function readRecent(job) {
  try {
    const { body } = await getJSON(`/api/v1/history?job=${seg(job)}&limit=${RECENT}`);
    state.recent.set(job, body.filter((r) => r.run != null));
    tell('recent', job);
  } catch { /* shown as no marks; read again at its next run */ }
}

/** A run started or ended: its mark now (from the event), its row later (from the history). */
function onRunEvent(record) {
  const rows = state.recent.get(record.job) || [];
  const at = rows.findIndex((r) => r.run === record.run);
  const row = at >= 0 ? rows[at] : { job: record.job, run: record.run, outcome: 'running', started: record.ts };
  if (record.event === 'run.exit') {
    const ok = record.code === 0 && !record.signal;
    row.outcome = ok ? 'succeeded' : 'failed';
    row.duration_ms = record.duration_ms;
    row.code = record.code;
    row.signal = record.signal;
    row.ended = record.ts;
  }
  if (at < 0) rows.unshift(row);
  state.recent.set(record.job, rows.slice(0, RECENT));
  tell('recent', record.job);
  // The history knows the outcome in its own words (timeout, stopped...): read it once the row is written.
  if (record.event === 'run.exit') setTimeout(() => readRecent(record.job), 500);
}

/** Follow the event stream for as long as the page is open (reconnecting after a second when it breaks). */
export async function follow(onState) {
  for (;;) {
    try {
      onState('on');
      await stream('/api/v1/events', (type, data) => {
        if (type === 'lagged') { refresh(); return; }
        let record;
        try { record = JSON.parse(data); } catch { return; }
        if (record.event === 'run.start' || record.event === 'run.exit') onRunEvent(record);
        refresh();
        tell('event', record);
      });
      onState('off', 'the runner ended the stream');
    } catch (e) {
      onState('off', e.message);
      if (e.status === 401 || e.status === 403) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    refresh();
  }
}

/** Read the status every POLL ms (next fire times move without events). */
export function poll() {
  if (timer) return;
  timer = setInterval(() => { if (!document.hidden) refresh(); }, POLL);
}
