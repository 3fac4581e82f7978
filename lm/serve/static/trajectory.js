// Token trajectories: eval traces and RLHF rollouts re-scored by their model; branches from any token.
'use strict';

LM.header('trajectories');
const $ = id => document.getElementById(id);
let run = null, current = null;

async function init() {
  let data;
  try { data = await LM.runs(); } catch (e) { LM.showError($('error'), e.message); return; }
  run = LM.currentRun(data);
  if (!run) { LM.showError($('error'), `unknown run ${JSON.stringify(LM.run)}`); return; }
  const values = run.traces.map(t => `trace:${t}`).concat(['rollouts']);
  const labels = run.traces.map(t => `eval traces · ${t} (model of stage ${run.trace_stages[t]})`).concat(['RLHF rollouts']);
  LM.fill($('source'), values, labels);
  if (LM.params.get('source') && values.includes(LM.params.get('source'))) $('source').value = LM.params.get('source');
  $('source').addEventListener('change', list);
  $('legend').append(LM.legend());
  await list();
}

async function list() {
  $('rows').replaceChildren();
  $('source_note').replaceChildren();
  const source = $('source').value;
  try {
    if (source === 'rollouts') {
      const data = await LM.api(`/api/rollouts?run=${encodeURIComponent(LM.run)}`);
      if (!data.saved) { $('source_note').append(LM.el('div', {class: 'notice', id: 'no_rollouts'}, data.message)); return; }
      $('temperature').value = 1;
      data.rows.forEach(r => $('rows').append(LM.el('div', {class: 'row', 'data-index': r.index,
        onclick: e => open('rollout', r.stage, r.index, e.currentTarget)},
        LM.el('div', {}, `#${r.index} · ${r.stage} · iteration ${r.iteration ?? '–'}`),
        LM.el('div', {class: 'muted'}, `proxy ${LM.fmt(r.proxy_reward)} · gold ${LM.fmt(r.gold_reward)} · ${r.question.slice(0, 70)}`))));
    } else if (source) {
      const model = source.slice('trace:'.length);
      const data = await LM.api(`/api/traces?run=${encodeURIComponent(LM.run)}&model=${encodeURIComponent(model)}`);
      $('temperature').value = 0;
      if (!run.models.includes(data.stage)) {
        $('source_note').append(LM.el('div', {class: 'notice'}, `This run has no model of stage ${data.stage}: these traces cannot be re-scored.`));
      }
      data.rows.forEach(r => $('rows').append(LM.el('div', {class: 'row', 'data-index': r.index,
        onclick: e => open('trace', model, r.index, e.currentTarget)},
        LM.el('div', {}, `#${r.index} · ${r.family}/${r.variant} · gold ${LM.fmt(r.score, 2)}`),
        LM.el('div', {class: 'muted'}, r.question.slice(0, 80)))));
    } else {
      $('source_note').append(LM.el('div', {class: 'notice'}, 'This run has no eval traces.'));
    }
  } catch (e) { LM.showError($('error'), e.message); }
}

async function open(source, name, index, rowEl) {
  document.querySelectorAll('.rowlist .row').forEach(r => r.classList.remove('here'));
  if (rowEl) rowEl.classList.add('here');
  LM.showError($('error'), '');
  $('branches').replaceChildren();
  $('view').replaceChildren(LM.el('p', {class: 'muted'}, 're-scoring with the model…'));
  let data;
  try {
    data = await LM.api('/api/rescore', {run: LM.run, source, name, index});
  } catch (e) { $('view').replaceChildren(); LM.showError($('error'), e.message); return; }
  current = {source, name, index, data};
  const tokens = data.tokens.map((t, i) => data.kl ? {...t, kl: data.kl[i]} : t);
  const mode = LM.el('select', {id: 'mode'}, LM.el('option', {value: 'prob'}, 'probability'),
                     data.kl ? LM.el('option', {value: 'kl'}, 'KL to the reference') : null);
  const stats = [`model: ${data.stage}`, `gold ${source === 'trace' ? 'score' : 'reward'}: ${LM.fmt(data.gold, 3)}`];
  if (data.proxy_reward !== null && data.proxy_reward !== undefined) stats.push(`proxy reward: ${LM.fmt(data.proxy_reward, 3)}`);
  if (data.kl) stats.push(`KL (summed): ${LM.fmt(data.kl.reduce((a, b) => a + b, 0), 3)} · ${data.kl_from}`);
  const sum = tokens.reduce((a, t) => a + t.logprob, 0);
  stats.push(`log-prob of the turn: ${LM.fmt(sum, 2)} over ${tokens.length} tokens`);
  $('view').replaceChildren(
    LM.el('h3', {}, `${source === 'trace' ? 'Eval trace' : 'RLHF rollout'} #${index}${data.family ? ` · ${data.family}/${data.variant}` : ''}`),
    LM.el('div', {class: 'small', id: 'stats'}, stats.join(' · ')),
    LM.el('div', {class: 'small muted'}, 'tokens re-encoded from the saved messages and re-scored by the model; colour by ', mode),
    ...LM.messages(data.prompt));
  const msg = LM.el('div', {class: 'msg assistant'}, LM.el('div', {class: 'who'}, 'assistant (the saved turn)'));
  $('view').append(msg);
  const view = new LM.TurnView(msg, (i, id) => branch(tokens, i, id), 'prob');
  tokens.forEach(t => view.add(t));
  view.finish({...data, ids: tokens.map(t => t.id), answer: null, stopped: null, parts: data.parts});
  mode.addEventListener('change', () => view.setMode(mode.value));
}

async function branch(tokens, index, id) {
  const d = current.data;
  const forced = tokens.slice(0, index).map(t => t.id).concat([id]);
  const alt = tokens[index].top.find(([i]) => i === id);
  const box = LM.el('div', {class: 'card branch', 'data-at': index},
    LM.el('h3', {}, `Branch at token ${index}: ${JSON.stringify(tokens[index].text)} → ${JSON.stringify(alt ? alt[1] : id)}`));
  $('branches').prepend(box);
  const view = new LM.TurnView(box, null, 'prob');
  const body = {run: LM.run, stage: d.stage, messages: d.prompt, tools: d.tools,
                temperature: parseFloat($('temperature').value), top_p: parseFloat($('top_p').value),
                max_tokens: Math.min(512, Math.max(parseInt($('max_tokens').value, 10) || 64, forced.length + 16)),
                seed: parseInt($('seed').value, 10) || 0, forced};
  try {
    await LM.stream('/api/chat', body, ev => {
      if (ev.type === 'token') view.add(ev);
      else if (ev.type === 'done') view.finish(ev);
      else if (ev.type === 'error') box.append(LM.el('div', {class: 'error'}, ev.message));
    });
  } catch (e) { box.append(LM.el('div', {class: 'error', role: 'alert'}, e.message)); }
}

init();
