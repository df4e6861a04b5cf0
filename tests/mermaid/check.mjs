// Parse a Mermaid file with the real Mermaid parser (under jsdom): `node check.mjs FILE` prints ok or the error.
// Its packages are installed by .ci/run into target/mermaid (npm install mermaid@11 jsdom); the test copies
// this file there, so the imports resolve to them.
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!DOCTYPE html><body></body>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
globalThis.DOMPurify = undefined;
const { default: mermaid } = await import('mermaid');
import fs from 'fs';
const text = fs.readFileSync(process.argv[2], 'utf8');
try { await mermaid.parse(text); console.log('ok'); } catch (e) { console.log('error: ' + e.message.split('\n')[0]); process.exit(1); }
