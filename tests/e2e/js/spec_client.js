// Copied verbatim from the OpenAnalyst server documentation (../shared/spec/000_*.txt), 'Building on Top'.
class OpenAnalystClient {
constructor(baseUrl = 'http://localhost:3080') {
this.base = baseUrl;
}
async chat(message, options = {}) {
return fetch(`${this.base}/v1/chat`, {
method: 'POST',
headers: { 'Content-Type': 'application/json' },
body: JSON.stringify({ message, ...options })
});
}
subscribeToSession(sessionId, onEvent) {
const es = new EventSource(`${this.base}/sessions/${sessionId}/events`);
es.addEventListener('assistant_delta', e => onEvent('delta', JSON.parse(e.data)));
es.addEventListener('tool_call', e => onEvent('tool', JSON.parse(e.data)));
es.addEventListener('error', e => onEvent('error', e));
return es;
}
}
