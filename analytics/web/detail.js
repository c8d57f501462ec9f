// One trace: the conversation, usage and cost, a timing bar drawn to scale, and the raw
// request and response with copy buttons. Bodies are fetched only here.

import { get } from './api.js';
import { el, svg, clear, fmt } from './dom.js';
import { say } from './app.js';

let generation = 0;

// renderDetail loads trace id into box.
export async function renderDetail(box, id) {
  const gen = ++generation;
  const back = new URLSearchParams(location.search);
  back.delete('trace');
  clear(box).append(el('p', null, el('a', { href: back.size ? '?' + back : location.pathname, 'data-nav': true, class: 'back' }, '← All traces')),
    el('p', { class: 'muted' }, 'Loading trace…'));
  const t = await get('/v1/traces/' + encodeURIComponent(id));
  if (gen !== generation) return;
  box.lastChild.remove();
  box.append(...[
    el('h1', { class: 'detail-title', tabindex: -1 }, el('span', { class: 'mono' }, t.model), ' ',
      el('span', { class: 'badge' + (t.status >= 400 ? ' bad' : '') }, String(t.status)),
      t.stream ? el('span', { class: 'badge' }, 'stream') : null),
    el('p', { class: 'muted mono' }, t.id + ' · ' + fmt.time(t.created_at)),
    el('h2', null, 'Timing'), timing(t),
    el('h2', null, 'Usage and cost'), facts(t),
    t.body_error ? el('p', { class: 'error' }, t.body_error) : null,
    el('h2', null, 'Conversation'), conversation(t),
    el('h2', null, 'Raw request'), raw('request', t.request_body),
    el('h2', null, 'Raw response'), raw('response', t.response_body),
  ].filter(Boolean));
  box.querySelector('h1').focus();
}

// timing is the bar of the request's time in the gateway, to scale: the gateway's own
// overhead, waiting for the upstream's first byte, and the rest (streaming the answer).
function timing(t) {
  const total = Math.max(t.latency_us, 1);
  const overhead = Math.min(t.overhead_us, total);
  const wait = t.ttfb_us > 0 ? Math.max(0, Math.min(t.ttfb_us - overhead, total - overhead)) : total - overhead;
  const streaming = Math.max(0, total - overhead - wait);
  const parts = [
    { name: 'overhead', label: 'Gateway overhead', us: overhead },
    { name: 'wait', label: t.ttfb_us > 0 ? 'Waiting for first byte' : 'Waiting for the upstream', us: wait },
    { name: 'stream', label: t.stream ? 'Streaming' : 'Receiving the answer', us: streaming },
  ];
  const W = 1000;
  let x = 0;
  const bar = svg('svg', { class: 'timing-bar', viewBox: `0 0 ${W} 24`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'Timing: ' + parts.map((p) => `${p.label} ${fmt.ms(p.us)}`).join(', ') });
  for (const p of parts) {
    const w = (p.us / total) * W;
    bar.append(svg('rect', { class: 'seg-' + p.name, x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 24, 'data-us': p.us },
      svg('title', null, `${p.label}: ${fmt.ms(p.us)}`)));
    x += w;
  }
  const legend = el('ul', { class: 'timing-legend' }, parts.map((p) =>
    el('li', null, el('span', { class: 'swatch seg-' + p.name, 'aria-hidden': 'true' }), `${p.label} ${fmt.ms(p.us)}`)));
  return el('div', { class: 'timing' }, bar, legend,
    el('p', { class: 'muted' }, `Total ${fmt.ms(t.latency_us)} · first byte at ${t.ttfb_us ? fmt.ms(t.ttfb_us) : '—'}`));
}

function facts(t) {
  const rows = [
    ['Prompt tokens', fmt.int(t.prompt_tokens)], ['Completion tokens', fmt.int(t.completion_tokens)],
    ['Cached tokens', fmt.int(t.cached_tokens)], ['Reasoning tokens', fmt.int(t.reasoning_tokens)],
    ['Cache writes (5m / 1h)', fmt.int(t.cache_write_5m_tokens) + ' / ' + fmt.int(t.cache_write_1h_tokens)],
    ['Audio tokens (in / out)', fmt.int(t.audio_prompt_tokens) + ' / ' + fmt.int(t.audio_completion_tokens)],
    ['Prediction tokens (accepted / rejected)', fmt.int(t.accepted_prediction_tokens) + ' / ' + fmt.int(t.rejected_prediction_tokens)],
    ['Usage source', t.usage_source + (t.usage_method ? ' (' + t.usage_method + ')' : '')], ['Service tier', t.service_tier || '—'], ['Cost', t.cost_micro_usd === null ? '— (unpriced)' : fmt.usd(t.cost_micro_usd)],
    ['Price version', t.price_version || '—'], ['Provider', t.provider], ['Served model', t.served_model || '—'],
    ['Finish reasons', (t.finish_reasons || []).join(', ') || '—'], ['Error type', t.error_type || '—'], ['Client aborted', t.client_aborted ? 'yes' : 'no'],
    ['Response truncated', t.response_truncated ? 'yes' : 'no'], ['Fields cut to fit the store', t.fields_cut ? 'yes' : 'no'],
    ['Upstream retries', String(t.upstream_retries)], ['Request id', t.request_id || '—'],
    ['API key', t.api_key_id], ['Key version', String(t.key_version)],
  ];
  return el('dl', { class: 'facts' }, rows.map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, v))));
}

// conversation shows the request's messages, then the answer (reassembled for a stream).
function conversation(t) {
  const list = el('ol', { class: 'conversation' });
  const req = parse(t.request_body);
  for (const m of (req && Array.isArray(req.messages) ? req.messages : [])) list.append(message(m));
  let answers = [];
  if (t.answer) answers = t.answer.choices.map((c) => ({ ...c, role: c.role || 'assistant' }));
  else {
    const resp = parse(t.response_body);
    if (resp && Array.isArray(resp.choices)) answers = resp.choices.map((c) => ({ ...(c.message || {}), finish_reason: c.finish_reason }));
    else if (resp && resp.error) list.append(el('li', { class: 'msg msg-error' }, el('div', { class: 'role' }, 'error'), el('pre', null, String(resp.error.message ?? JSON.stringify(resp.error)))));
  }
  for (const a of answers) list.append(message(a, true));
  if (t.answer && t.answer.error) list.append(el('li', { class: 'msg msg-error' }, el('div', { class: 'role' }, 'stream error'), el('pre', null, JSON.stringify(t.answer.error))));
  if (!list.children.length) list.append(el('li', { class: 'muted' }, 'No conversation was kept for this trace.'));
  return list;
}

function message(m, answer) {
  const role = String(m.role || 'unknown');
  const head = [role];
  if (m.name) head.push(' · ' + m.name);
  if (m.tool_call_id) head.push(' · for call ' + m.tool_call_id);
  if (answer && m.finish_reason) head.push(' · finished: ' + m.finish_reason);
  return el('li', { class: 'msg msg-' + role.replace(/[^a-z]/g, '') },
    el('div', { class: 'role' }, head.join('')),
    contentText(m.content) ? el('pre', { class: 'content' }, contentText(m.content)) : null,
    m.refusal ? el('pre', { class: 'content refusal' }, 'Refusal: ' + m.refusal) : null,
    Array.isArray(m.tool_calls) ? m.tool_calls.map(toolCall) : null);
}

function contentText(c) {
  if (c === null || c === undefined) return '';
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return c.map((p) => (p && typeof p.text === 'string' ? p.text : '[' + (p && p.type ? p.type : 'part') + ']')).join('\n');
  return JSON.stringify(c);
}

function toolCall(c) {
  const f = c.function || {};
  let args = f.arguments ?? '';
  const parsed = parse(args);
  if (parsed !== null) args = JSON.stringify(parsed, null, 2);
  return el('div', { class: 'tool-call' },
    el('div', { class: 'role' }, 'tool call: ' + (f.name || '?') + (c.id ? ' · ' + c.id : '')),
    el('pre', { class: 'content' }, String(args)));
}

function raw(part, body) {
  if (body === null || body === undefined) return el('p', { class: 'muted' }, 'No ' + part + ' body was kept.');
  const parsed = parse(body);
  const text = parsed === null ? body : JSON.stringify(parsed, null, 2);
  const copy = el('button', { type: 'button', class: 'copy', 'data-copy': part }, 'Copy ' + part);
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      say('Copied the ' + part + '.');
    } catch {
      say('The browser did not allow copying; select the text instead.', true);
    }
  });
  return el('div', { class: 'raw' }, copy, el('pre', { class: 'json', tabindex: 0, 'data-raw': part }, text));
}

function parse(s) {
  if (typeof s !== 'string') return null;
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}
