// A small WHATWG EventSource for Node 20, which has fetch but no EventSource. Test harness only: it lets the
// spec's browser client run unchanged. Supports event/data/id fields, comments, Last-Event-ID on reconnect
// is not needed by the tests (close() ends it).
export class EventSource extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    this._abort = new AbortController();
    this._run().catch((err) => {
      if (this.readyState !== 2) this.dispatchEvent(Object.assign(new Event('error'), { error: err }));
    });
  }
  close() { this.readyState = 2; this._abort.abort(); }
  async _run() {
    const res = await fetch(this.url, { headers: { Accept: 'text/event-stream' }, signal: this._abort.signal });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    this.readyState = 1;
    this.dispatchEvent(new Event('open'));
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true });
      let idx;
      while ((idx = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx).replace(/^\r?\n\r?\n/, '');
        this._dispatch(block);
      }
    }
  }
  _dispatch(block) {
    let type = 'message'; const data = []; let id = null;
    for (const line of block.split(/\r?\n/)) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value; else if (field === 'data') data.push(value); else if (field === 'id') id = value;
    }
    if (data.length === 0) return;
    const ev = new MessageEvent(type, { data: data.join('\n'), lastEventId: id ?? '' });
    this.dispatchEvent(ev);
  }
}
