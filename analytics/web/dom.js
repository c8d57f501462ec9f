// DOM helpers. Every string given as a child becomes a text node: data from the API
// (model names, messages, ids) is never parsed as HTML.

const SVG = 'http://www.w3.org/2000/svg';

// el builds an element: attrs are attributes (class, href, …; on* handlers are not
// accepted), children are nodes or strings (as text), null/undefined/false are skipped.
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// svg builds an SVG element the same way.
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) throw new Error('el: no inline handlers');
    node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// clear removes every child of node.
export function clear(node) {
  node.replaceChildren();
  return node;
}

const intFmt = new Intl.NumberFormat('en-US');

// Formatters; null and undefined are "—" (no data), never 0.
export const fmt = {
  int: (n) => (n === null || n === undefined ? '—' : intFmt.format(n)),
  usd: (micro) => (micro === null || micro === undefined ? '—' : usd(micro)),
  ms: (us) => (us === null || us === undefined ? '—' : ms(us)),
  pct: (r) => (r === null || r === undefined ? '—' : (r * 100).toFixed(r < 0.1 ? 2 : 1) + ' %'),
  time: (iso) => new Date(iso).toLocaleString(),
};

function usd(micro) {
  const d = micro / 1e6;
  if (d !== 0 && Math.abs(d) < 0.01) return '$' + d.toFixed(6);
  return '$' + d.toFixed(2);
}

function ms(us) {
  const v = us / 1000;
  if (v >= 10000) return (v / 1000).toFixed(1) + ' s';
  return (v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)) + ' ms';
}
