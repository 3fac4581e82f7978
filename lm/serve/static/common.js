// lm.serve: what every page shares: the API, server-sent events over POST, the header, and the token view.
'use strict';

const LM = {};

LM.params = new URLSearchParams(location.search);
LM.run = LM.params.get('run') || '.';

// JSON from the API; a non-2xx answer throws its one-line {"error"} message.
LM.api = async function (path, body) {
  const init = body === undefined ? {} : {method: 'POST', headers: {'Content-Type': 'application/json'},
                                          body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
};

// POSTs body and calls onEvent(event) for each server-sent event until the stream ends.
LM.stream = async function (path, body, onEvent, signal) {
  const response = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                      body: JSON.stringify(body), signal});
  if (!response.ok) {
    const data = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
    throw new Error(data.error || `HTTP ${response.status}`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = chunk.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
};

LM.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
};

LM.showError = function (box, message) {
  box.replaceChildren(message ? LM.el('div', {class: 'error', role: 'alert'}, message) : '');
};

LM.fmt = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x)) ? '–' : Number(x).toFixed(digits);
LM.num = x => Number.isInteger(x) ? String(x) : LM.fmt(x);  // a count as it is, a measurement to 3 digits
LM.pct = p => (100 * p).toFixed(p < 0.001 ? 3 : 1) + '%';

LM.header = function (page) {
  const link = (href, name) => LM.el('a', {href: `${href}?run=${encodeURIComponent(LM.run)}`,
                                           class: page === name ? 'here' : ''}, name);
  const top = LM.el('header', {class: 'top'}, LM.el('span', {class: 'brand'}, 'lm.serve'),
    LM.el('nav', {}, link('/', 'runs'), link('/chat', 'chat'), link('/trajectory', 'trajectories'), link('/rank', 'ranking')),
    LM.el('span', {class: 'where', id: 'where'}, ''));
  document.body.prepend(top);
};

LM.runs = async function () {
  const data = await LM.api('/api/runs');
  document.getElementById('where').textContent = `${data.workdir} · run ${LM.run}`;
  return data;
};

LM.currentRun = function (data) {
  return data.runs.find(r => r.name === LM.run);
};

// Options of a <select>; keeps the value if still there.
LM.fill = function (select, values, labels) {
  const keep = select.value;
  select.replaceChildren(...values.map((v, i) => LM.el('option', {value: v}, labels ? labels[i] : v)));
  if (values.includes(keep)) select.value = keep;
};

// ------------------------------------------------------------------------------ token view

// The popup of a token: its alternatives with probabilities, the entropy; a click on one calls pick(id).
LM.tip = {
  box: null, pinned: null, hideTimer: null,
  show(span, tok, pick) {
    if (!this.box) {
      this.box = LM.el('div', {id: 'tip', class: 'hidden'});
      this.box.addEventListener('mouseenter', () => clearTimeout(this.hideTimer));
      this.box.addEventListener('mouseleave', () => { if (!this.pinned) this.hide(); });
      document.body.append(this.box);
      document.addEventListener('click', e => {
        if (this.pinned && !this.box.contains(e.target) && !e.target.classList.contains('tok')) this.unpin();
      });
    }
    clearTimeout(this.hideTimer);
    const p = Math.exp(tok.logprob);
    const rows = tok.top.map(([id, text, lp]) => {
      const q = Math.exp(lp);
      const clickable = pick && id !== tok.id;
      return LM.el('div', {class: `alt${id === tok.id ? ' chosen' : ''}${clickable ? ' clickable' : ''}`,
                           'data-id': id, title: clickable ? 'regenerate from here with this token' : '',
                           onclick: clickable ? (e) => { e.stopPropagation(); this.unpin(); pick(id); } : null},
        LM.el('span', {class: 't'}, JSON.stringify(text)),
        LM.el('span', {}, LM.pct(q)),
        LM.el('span', {}, LM.el('div', {class: 'b', style: `width:${Math.max(2, 100 * q)}%`})));
    });
    const inTop = tok.top.some(([id]) => id === tok.id);
    this.box.replaceChildren(...[
      LM.el('div', {class: 'head'}, LM.el('span', {}, `token ${JSON.stringify(tok.text)} · p ${LM.pct(p)}`),
            LM.el('span', {}, `entropy ${LM.fmt(tok.entropy, 2)} nats`)),
      ...rows,
      inTop ? null : LM.el('div', {class: 'hint'}, `the chosen token is not among the top ${tok.top.length}`),
      tok.kl !== undefined ? LM.el('div', {class: 'hint'}, `KL to the reference at this token: ${LM.fmt(tok.kl, 4)}`) : null,
      LM.el('div', {class: 'hint'}, tok.source === 'tool' ? 'written by the tool, not the model'
            : pick ? 'click an alternative to regenerate from here' : `source: ${tok.source}`)].filter(Boolean));
    const r = span.getBoundingClientRect();
    this.box.style.left = `${Math.min(window.scrollX + r.left, window.scrollX + document.documentElement.clientWidth - 300)}px`;
    this.box.style.top = `${window.scrollY + r.bottom + 4}px`;
    this.box.classList.remove('hidden');
  },
  hideSoon() { if (!this.pinned) this.hideTimer = setTimeout(() => this.hide(), 250); },
  hide() { if (this.box) this.box.classList.add('hidden'); },
  pin(span) { this.unpin(); this.pinned = span; span.classList.add('pinned'); },
  unpin() { if (this.pinned) this.pinned.classList.remove('pinned'); this.pinned = null; this.hide(); },
};

const SECTIONS = {'<|think|>': 'think', '<|tool_call|>': 'call', '<|tool_result|>': 'result'};
const CLOSERS = {'<|/think|>': 'think', '<|/tool_call|>': 'call', '<|/tool_result|>': 'result'};
const LABELS = {think: 'thinking', call: 'tool call', result: 'tool result', answer: 'answer'};

// Colour of a token: its probability on a log scale (red <= 0.001 .. green 1), or its KL to the
// reference (white 0 .. red >= 1 nat; blue where the reference liked the token more).
LM.colour = function (tok, mode) {
  if (mode === 'kl' && tok.kl !== undefined && tok.kl !== null) {
    const k = Math.min(1, Math.abs(tok.kl));
    return `hsl(${tok.kl >= 0 ? 0 : 220}, 80%, ${100 - 28 * k}%)`;
  }
  if (mode === 'none') return 'none';
  const level = Math.max(0, Math.min(1, 1 + tok.logprob / Math.log(1000)));
  return `hsl(${Math.round(120 * level)}, 75%, 82%)`;
};

// A turn drawn token by token, in sections (thinking, tool call, tool result, answer) split at the
// control tokens. pick(index, id) regenerates with token `index` replaced by `id` (null: not offered).
LM.TurnView = class {
  constructor(container, pick, mode = 'prob') {
    this.root = LM.el('div', {class: 'turn'});
    container.append(this.root);
    this.tokens = [];
    this.pick = pick;
    this.mode = mode;
    this.section = null;
    this.open('answer');
  }
  open(kind) {
    this.kind = kind;
    this.body = LM.el('span', {class: 'text'});
    this.section = LM.el('div', {class: `section ${kind}`, 'data-kind': kind},
                         LM.el('span', {class: 'label'}, LABELS[kind]), this.body);
    this.root.append(this.section);
  }
  add(tok) {
    const index = this.tokens.length;
    this.tokens.push(tok);
    if (tok.control && SECTIONS[tok.text]) this.open(SECTIONS[tok.text]);
    const span = LM.el('span', {class: `tok${tok.control ? ' control' : ''} ${tok.source}`, 'data-index': index,
                                'data-id': tok.id, 'data-logprob': tok.logprob, 'data-source': tok.source},
                       tok.control ? tok.text.replace(/^<\|?|\|?>$/g, '') : tok.text);
    span.style.background = LM.colour(tok, this.mode);
    const pick = this.pick && tok.source !== 'tool' ? (id) => this.pick(index, id) : null;
    span.addEventListener('mouseenter', () => { if (!LM.tip.pinned) LM.tip.show(span, tok, pick); });
    span.addEventListener('mouseleave', () => LM.tip.hideSoon());
    span.addEventListener('click', (e) => { e.stopPropagation(); LM.tip.pin(span); LM.tip.show(span, tok, pick); });
    this.body.append(span);
    if (tok.control && CLOSERS[tok.text] === this.kind) this.open('answer');
  }
  // The finished turn: empty sections dropped, a text section before a call labelled so, the parsed answer kept.
  finish(done) {
    for (const s of [...this.root.querySelectorAll('.section')]) {
      if (!s.querySelector('.tok')) s.remove();
    }
    const sections = [...this.root.querySelectorAll('.section')];
    sections.forEach((s, i) => {
      const next = sections[i + 1];
      if (s.dataset.kind === 'answer' && next && next.dataset.kind === 'call') {
        s.querySelector('.label').textContent = 'before the call';
      }
    });
    if (done) {
      this.root.dataset.answer = done.answer ? (done.answer.content || '') : '';
      this.root.dataset.ids = JSON.stringify(done.ids);
      this.root.dataset.stopped = done.stopped || '';
      const bad = done.parts.filter(p => p.kind === 'bad_call');
      if (bad.length) this.root.append(LM.el('div', {class: 'section bad'}, LM.el('span', {class: 'label'}, 'bad tool call'),
                                             bad.map(p => p.text).join('\n')));
      const note = done.stopped === 'max_new_tokens' ? 'stopped: max tokens reached'
        : done.stopped === 'tool_budget' ? 'stopped: tool-call budget used' : done.stopped === 'cancelled' ? 'cancelled' : '';
      if (note) this.root.append(LM.el('div', {class: 'muted small'}, note));
    }
  }
  setMode(mode) {
    this.mode = mode;
    this.root.querySelectorAll('.tok').forEach(s => { s.style.background = LM.colour(this.tokens[+s.dataset.index], mode); });
  }
};

LM.legend = function () {
  return LM.el('div', {class: 'legend'}, 'token probability', LM.el('span', {}, '≤0.001'), LM.el('span', {class: 'bar'}),
               LM.el('span', {}, '1 (log scale)'), LM.el('span', {}, '· hover or tap a token for its alternatives'));
};

// Messages (a prompt) as plain blocks.
LM.messages = function (messages) {
  return messages.map(m => LM.el('div', {class: `msg ${m.role === 'user' ? 'user' : ''}`},
    LM.el('div', {class: 'who'}, m.role), LM.el('div', {class: 'body'}, m.content || '')));
};

// A finished turn from its parts (lm.cli.chat.show_turn's order), without tokens.
LM.parts = function (parts) {
  return LM.el('div', {class: 'turn'}, parts.filter(p => p.kind !== 'answer' || p.text || parts.length === 1).map(p =>
    LM.el('div', {class: `section ${{before_call: 'answer', bad_call: 'bad'}[p.kind] || p.kind}`},
          LM.el('span', {class: 'label'}, {think: 'thinking', before_call: 'before the call', call: 'tool call',
                                           bad_call: 'bad tool call', result: 'tool result', answer: 'answer'}[p.kind]),
          p.text)));
};
