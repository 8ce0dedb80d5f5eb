// The audit viewer's only script. Rules that keep it safe against hostile tool input and output:
// it never uses innerHTML, outerHTML, insertAdjacentHTML, document.write or eval: every value reaches the page
// through textContent (see el()), and the page's Content-Security-Policy refuses inline script anyway.
// The key and tenant live in sessionStorage (this tab only) and go out only to this origin's /v1/audit API.
"use strict";

const PER_PAGE = 100;  // the API's maximum: fewer calls split across two pages
const state = { page: 1, totalPages: 0, filters: {} };

function $(id) { return document.getElementById(id); }

// One element, its text set as text, never parsed as markup.
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function credentials() {
  return { key: sessionStorage.getItem("oa.apiKey") || "", tenant: sessionStorage.getItem("oa.tenant") || "" };
}

function headers() {
  const c = credentials();
  const h = { "Accept": "application/json" };
  if (c.key) h["Authorization"] = "Bearer " + c.key;
  if (c.tenant) h["X-Tenant-ID"] = c.tenant;
  return h;
}

function query(filters, extra) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) if (value) params.set(name, value);
  for (const [name, value] of Object.entries(extra || {})) params.set(name, String(value));
  const text = params.toString();
  return text ? "?" + text : "";
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    let code = "HTTP_" + response.status, message = response.statusText;
    try {
      const body = await response.json();
      if (body && body.error) { code = body.error.code; message = body.error.message; }
    } catch (_) { /* not our error shape: keep the status line */ }
    throw new ApiError(response.status, code, message);
  }
  return response;
}

function showError(error) {
  const box = $("error");
  box.hidden = false;
  box.textContent = error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error);
}

function clearError() { const box = $("error"); box.hidden = true; box.textContent = ""; }

async function loadWhoami() {
  const me = await (await api("/me")).json();
  $("whoami").textContent = "Tenant: " + (me.is_owner ? "owner (this server's own user)" : me.tenant);
}

async function loadVerify() {
  const box = $("verify");
  const v = await (await api("/v1/audit/verify")).json();
  box.className = "verify " + (v.ok ? "ok" : "bad");
  let text = v.ok ? `Chain verified: ${v.records} records, ending at the signed head`
                  : `Chain NOT verified: first bad record ${v.first_bad_seq}: ${v.reason}`;
  if (v.ok && v.tail_authenticated === false) text += " (tail not authenticated)";
  box.textContent = text;
  box.dataset.ok = String(Boolean(v.ok));
}

// started and finished records of one call, in the order the page returned them. A session's call ids come
// from the model provider and may repeat: a record whose slot is already taken starts a new row rather than
// replacing (and so hiding) the earlier call's record.
function groupCalls(records) {
  const calls = [];
  const latest = new Map();
  for (const record of records) {
    if (record.phase === "connection") {  // an egress attempt: a row of its own, under its call's id
      calls.push({ id: record.call_id || "seq-" + record.seq, connection: record });
      continue;
    }
    const key = record.call_id || "seq-" + record.seq;
    const phase = record.phase === "started" ? "started" : "finished";
    let call = latest.get(key);
    if (!call || call[phase]) {
      call = { id: key, started: null, finished: null };
      latest.set(key, call);
      calls.push(call);
    }
    call[phase] = record;
  }
  return calls;
}

function limitsHit(f) {
  if (!f) return "";
  const hit = [];
  if (f.limit) hit.push(f.limit);
  if (f.timed_out) hit.push("timeout");
  if (f.oom_killed) hit.push("oom");
  if (f.truncated) hit.push("output truncated");
  return [...new Set(hit)].join(", ");
}

function resultText(f) {
  if (!f) return "running or interrupted";
  if (f.error_code) return f.error_code;
  return f.exit_code === null || f.exit_code === undefined ? "" : "exit " + f.exit_code;
}

function short(id) { return id ? String(id).replace(/^sha256:/, "").slice(0, 12) : ""; }

function cell(row, text, title) {
  const td = el("td", text);
  if (title) td.title = String(title);
  row.appendChild(td);
  return td;
}

function block(parent, label, value, className) {
  if (value === null || value === undefined || value === "") return;
  const wrap = el("div", undefined, "field " + (className || ""));
  wrap.appendChild(el("h4", label));
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  wrap.appendChild(el("pre", text));
  parent.appendChild(wrap);
}

function renderConnection(tbody, c) {
  const row = el("tr", undefined, "call connection " + (c.decision || ""));
  row.dataset.callId = c.call_id || "";
  row.dataset.phase = "connection";
  cell(row, c.seq);
  cell(row, (c.ts || "").replace("T", " ").replace("Z", ""));
  cell(row, c.session_id || "—");
  cell(row, `${c.method || "?"} ${c.host || "?"}:${c.port || "?"}`, c.address ? "address " + c.address : "");
  cell(row, c.decision || "", "decision");
  cell(row, c.rule || c.error || "", c.call_id ? "call " + c.call_id : "no call: the session's");
  cell(row, c.limit || "");
  cell(row, c.duration_ms);
  cell(row, `↑${c.bytes_up} ↓${c.bytes_down}`, "bytes up / down");
  cell(row, c.call_id ? short(c.call_id) : "—", c.call_id);
  tbody.appendChild(row);
}

function renderCall(tbody, call) {
  if (call.connection) return renderConnection(tbody, call.connection);
  const s = call.started, f = call.finished, any = s || f;
  const decision = any.decision || "";
  const row = el("tr", undefined, "call " + decision);
  row.dataset.callId = call.id;
  cell(row, s ? s.seq : f.seq);
  cell(row, (any.ts || "").replace("T", " ").replace("Z", ""));
  cell(row, any.session_id || "—");
  cell(row, any.tool);
  cell(row, decision, "decision");
  cell(row, resultText(f));
  cell(row, limitsHit(f));
  cell(row, f && f.duration_ms !== null && f.duration_ms !== undefined ? f.duration_ms : "");
  cell(row, f ? short(f.container_id) : "", f && f.container_id);
  cell(row, f ? short(f.image_id) : "", f && f.image_id);
  tbody.appendChild(row);

  const detailRow = el("tr", undefined, "detail");
  const td = el("td");
  td.colSpan = 10;
  const details = el("details");
  details.open = true;
  details.appendChild(el("summary", `call ${call.id} · policy ${any.policy || "?"}`));
  if (s) {
    block(details, s.input_truncated ? "input (truncated; sha256 " + s.input_sha256 + ")" : "input",
          s.input, "input");
  }
  block(details, "reason", (s && s.reason) || (f && f.reason), "reason");
  if (f) {
    block(details, "error", f.error_code ? `${f.error_code}: ${f.error_message || ""}` : "", "error");
    block(details, f.output_truncated ? "output (truncated; sha256 " + f.output_sha256 + ")" : "output",
          f.output, "output");
    block(details, "container / image", [f.container_id, f.image_id].filter(Boolean).join("\n"), "sandbox");
  }
  td.appendChild(details);
  detailRow.appendChild(td);
  tbody.appendChild(detailRow);
}

async function loadPage() {
  const body = await (await api("/v1/audit" + query(state.filters, { page: state.page, per_page: PER_PAGE }))).json();
  const tbody = $("calls").tBodies[0];
  tbody.replaceChildren();
  for (const call of groupCalls(body.data)) renderCall(tbody, call);
  state.totalPages = body.meta.total_pages;
  $("empty").hidden = body.data.length > 0;
  $("page-info").textContent = `page ${body.meta.page} of ${Math.max(1, body.meta.total_pages)} · ` +
                               `${body.meta.total} records`;
  $("prev").disabled = state.page <= 1;
  $("next").disabled = state.page >= body.meta.total_pages;
  $("export-url").textContent = "GET /v1/audit/export" + query(state.filters);
}

async function refresh() {
  clearError();
  try {
    await loadWhoami();
    await Promise.all([loadVerify(), loadPage()]);
    document.body.dataset.loaded = "yes";
  } catch (error) {
    $("calls").tBodies[0].replaceChildren();
    showError(error);
    document.body.dataset.loaded = "error";
  }
}

// The export needs the auth headers, which a plain link cannot carry: fetch it, then save the blob.
async function exportLog(filters) {
  clearError();
  try {
    const response = await api("/v1/audit/export" + query(filters));
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename="([A-Za-z0-9._-]+)"/.exec(disposition);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a");
    link.href = url;
    link.download = match ? match[1] : "audit.jsonl";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError(error);
  }
}

function readFilters() {
  return {
    session_id: $("f-session").value.trim(), tool: $("f-tool").value.trim(),
    decision: $("f-decision").value, host: $("f-host").value.trim(), since: $("f-since").value.trim(), until: $("f-until").value.trim(),
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const c = credentials();
  $("api-key").value = c.key;
  $("tenant").value = c.tenant;
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("oa.apiKey", $("api-key").value.trim());
    sessionStorage.setItem("oa.tenant", $("tenant").value.trim());
    state.page = 1;
    refresh();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem("oa.apiKey");
    sessionStorage.removeItem("oa.tenant");
    $("api-key").value = "";
    $("tenant").value = "";
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.filters = readFilters();
    state.page = 1;
    refresh();
  });
  $("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); refresh(); });
  $("next").addEventListener("click", () => { state.page += 1; refresh(); });
  $("export-filtered").addEventListener("click", () => exportLog(state.filters));
  $("export-all").addEventListener("click", () => exportLog({}));
  refresh();
});
