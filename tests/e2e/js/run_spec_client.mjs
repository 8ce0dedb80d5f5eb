// Runs the spec's JavaScript client (spec_client.js, unchanged) against a live server and prints what it saw
// as one JSON line. Usage: node run_spec_client.mjs BASE_URL SESSION_ID
import { readFileSync } from 'node:fs';
import { EventSource } from './eventsource.mjs';

globalThis.EventSource = EventSource;
const source = readFileSync(new URL('./spec_client.js', import.meta.url), 'utf8');
const OpenAnalystClient = new Function(`${source}\nreturn OpenAnalystClient;`)();

const [base, sessionId] = process.argv.slice(2);
const client = new OpenAnalystClient(base);
const seen = { chatStatus: null, chatEvents: [], chatText: '', sessionEvents: [] };

const res = await client.chat('Say hello');
seen.chatStatus = res.status;
const body = await res.text();
for (const block of body.split('\n\n')) {
  const ev = /^event: (.*)$/m.exec(block); const data = /^data: (.*)$/m.exec(block);
  if (!ev || !data) continue;
  seen.chatEvents.push(ev[1]);
  if (ev[1] === 'assistant_delta') seen.chatText += JSON.parse(data[1]).text;
}

await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no tool event within 30 s')), 30000);
  let es;
  es = client.subscribeToSession(sessionId, (kind, data) => {
    seen.sessionEvents.push({ kind, data: kind === 'error' ? String(data.type) : data });
    if (kind === 'tool') { clearTimeout(timer); es.close(); resolve(); }
  });
  fetch(`${base}/sessions/${sessionId}/message`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message: 'List the workspace' }),
  }).then((r) => r.text());
});
console.log(JSON.stringify(seen));
process.exit(0);
