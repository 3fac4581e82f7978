// The chat page: a conversation with one model of the run, streamed token by token.
'use strict';

LM.header('chat');
const $ = id => document.getElementById(id);
const turns = [];          // {role: 'user', content} or {role: 'assistant', versions: [...], current}
let controller = null;     // the answer being streamed (AbortController)

async function init() {
  let data;
  try { data = await LM.runs(); } catch (e) { LM.showError($('chat_error'), e.message); return; }
  LM.fill($('run'), data.runs.map(r => r.name));
  $('run').value = LM.run;
  $('run').addEventListener('change', () => { location.search = `?run=${encodeURIComponent($('run').value)}`; });
  const run = LM.currentRun(data);
  const models = run ? run.models : [];
  LM.fill($('stage'), models);
  if (models.includes(LM.params.get('stage'))) $('stage').value = LM.params.get('stage');
  else if (models.includes('sft')) $('stage').value = 'sft';
  if (!run) LM.showError($('notice'), `unknown run ${LM.run}`);
  else if (!models.length) {
    $('notice').replaceChildren(LM.el('div', {class: 'notice'},
      `This run has no trained model yet (finished stages: ${run.stages.map(s => s.name).join(', ') || 'none'}).`));
  }
  $('legend').append(LM.legend());
}

function conversationUpTo(end) {
  const messages = [];
  for (const t of turns.slice(0, end)) {
    if (t.role === 'user') messages.push({role: 'user', content: t.content});
    else {
      const v = t.versions[t.current];
      if (v.done) messages.push(...v.done.history);
    }
  }
  return messages;
}

function settings() {
  return {run: LM.run, stage: $('stage').value, system: $('system').value, tools: $('tools').checked,
          temperature: parseFloat($('temperature').value), top_p: parseFloat($('top_p').value),
          max_tokens: parseInt($('max_tokens').value, 10), seed: parseInt($('seed').value, 10) || 0};
}

function draw() {
  const box = $('conversation');
  box.replaceChildren();
  turns.forEach((t, i) => {
    if (t.role === 'user') {
      box.append(LM.el('div', {class: 'msg user'}, LM.el('div', {class: 'who'}, 'you'),
                       LM.el('div', {class: 'body'}, t.content)));
      return;
    }
    const v = t.versions[t.current];
    const who = LM.el('div', {class: 'who'}, `assistant · ${v.stage}`);
    if (t.versions.length > 1) {
      who.append(LM.el('span', {class: 'versions'},
        LM.el('button', {class: 'plain', onclick: () => { t.current = Math.max(0, t.current - 1); draw(); }}, '◀'),
        `version ${t.current + 1}/${t.versions.length}`,
        LM.el('button', {class: 'plain', onclick: () => { t.current = Math.min(t.versions.length - 1, t.current + 1); draw(); }}, '▶')));
    }
    if (v.branch) who.append(LM.el('span', {class: 'branch-note'}, v.branch));
    const msg = LM.el('div', {class: 'msg assistant', 'data-turn': i, 'data-version': t.current}, who);
    box.append(msg);
    const last = i === turns.length - 1;
    const view = new LM.TurnView(msg, last ? (index, id) => regenerate(t, v, index, id) : null,
                                 $('colour').checked ? 'prob' : 'none');
    if (!$('colour').checked) view.root.classList.add('plain');
    v.tokens.forEach(tok => view.add(tok));
    if (v.done) view.finish(v.done);
    v.view = view;
    if (v.error) msg.append(LM.el('div', {class: 'error', role: 'alert'}, v.error));
  });
}

// Streams one answer into `version`; false when the server refused the request (nothing was written).
async function answer(version, body) {
  $('send').disabled = true;
  $('stop').disabled = false;
  LM.showError($('chat_error'), '');
  controller = new AbortController();
  try {
    await LM.stream('/api/chat', body, ev => {
      if (ev.type === 'token') { version.tokens.push(ev); version.view.add(ev); }
      else if (ev.type === 'done') { version.done = ev; version.view.finish(ev); }
      else if (ev.type === 'error') { version.error = ev.message; draw(); }
    }, controller.signal);
    return true;
  } catch (e) {
    if (e.name === 'AbortError') return true;
    LM.showError($('chat_error'), e.message);
    return version.tokens.length > 0;
  } finally {
    controller = null;
    $('send').disabled = false;
    $('stop').disabled = true;
  }
}

async function send() {
  if (controller) return;
  const text = $('input').value;
  const s = settings();
  if ($('new_seed').checked && turns.length) $('seed').value = s.seed = Math.floor(Math.random() * 2 ** 31);
  turns.push({role: 'user', content: text});
  const version = {tokens: [], done: null, stage: s.stage, seed: s.seed, settings: s};
  turns.push({role: 'assistant', versions: [version], current: 0});
  draw();
  $('input').value = '';
  if (!await answer(version, {...s, messages: conversationUpTo(turns.length - 1)})) {
    turns.splice(turns.length - 2, 2);  // refused: the message goes back into the box
    $('input').value = text;
    draw();
  }
}

async function regenerate(turn, from, index, id) {
  if (controller) return;
  const forced = from.tokens.slice(0, index).map(t => t.id).concat([id]);
  const old = from.tokens[index];
  const alt = old.top.find(([i]) => i === id);
  const version = {tokens: [], done: null, stage: from.stage, seed: from.seed, settings: from.settings,
                   branch: `branched at token ${index}: ${JSON.stringify(old.text)} → ${JSON.stringify(alt ? alt[1] : id)}`};
  turn.versions.push(version);
  turn.current = turn.versions.length - 1;
  draw();
  if (!await answer(version, {...from.settings, messages: conversationUpTo(turns.indexOf(turn)), forced})) {
    turn.versions.pop();
    turn.current = turn.versions.length - 1;
    draw();
  }
}

$('send').addEventListener('click', send);
$('input').addEventListener('keydown', e => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); } });
$('stop').addEventListener('click', () => controller && controller.abort());
$('clear').addEventListener('click', () => { if (!controller) { turns.length = 0; draw(); } });
$('colour').addEventListener('change', draw);
init();
