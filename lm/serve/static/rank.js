// The ranking page: K samples of one prompt, ordered by a person; saved to <run>/human/rankings.jsonl.
'use strict';

LM.header('ranking');
const $ = id => document.getElementById(id);
const letter = i => String.fromCharCode(65 + i);
let task = null, order = [], tied = [];  // order: response indices best first; tied[p]: position p ties with p - 1

async function init() {
  let data;
  try { data = await LM.runs(); } catch (e) { LM.showError($('error'), e.message); return; }
  const run = LM.currentRun(data);
  if (!run) { LM.showError($('error'), `unknown run ${JSON.stringify(LM.run)}`); return; }
  LM.fill($('stage'), run.models);
  if (run.models.includes('sft')) $('stage').value = 'sft';
  if (!run.models.length) {
    $('task').prepend(LM.el('div', {class: 'notice'}, `This run has no trained model yet (finished stages: ${run.stages.map(s => s.name).join(', ') || 'none'}).`));
  }
  const families = (await LM.api('/api/families')).families;
  LM.fill($('family'), [''].concat(Object.keys(families)), ['any (the run\'s preference mix)'].concat(Object.keys(families)));
  $('rater').value = localStorage.getItem('lm.serve.rater') || '';
  $('rater').addEventListener('change', () => { localStorage.setItem('lm.serve.rater', $('rater').value.trim()); summary(); });
  summary();
}

async function summary() {
  const rater = $('rater').value.trim();
  try {
    const data = await LM.api(`/api/rank/summary?run=${encodeURIComponent(LM.run)}&rater=${encodeURIComponent(rater)}`);
    showSummary(data.rater, data.everyone);
  } catch (e) { LM.showError($('error'), e.message); }
}

function showSummary(mine, everyone) {
  const rate = r => r && r.rate !== null ? `${LM.pct(r.rate)} (${r.agree}/${r.pairs} pairs)` : '–';
  const rows = [];
  if (mine) rows.push(['you: rankings', mine.rankings], ['you vs gold', rate(mine.gold)], ['you vs the panel', rate(mine.panel)]);
  if (mine) rows.push(['the panel vs gold (same prompts)', rate(mine.panel_vs_gold)]);
  if (everyone) rows.push(['everyone: rankings', everyone.rankings], ['everyone vs gold', rate(everyone.gold)]);
  $('summary').replaceChildren(LM.el('table', {id: 'summary_table'}, rows.map(([k, v]) => LM.el('tr', {}, LM.el('td', {}, k), LM.el('td', {}, String(v))))));
}

async function newTask() {
  LM.showError($('error'), '');
  $('result').classList.add('hidden');
  const source = document.querySelector('input[name=source]:checked').value;
  const body = {run: LM.run, stage: $('stage').value, k: parseInt($('k').value, 10),
                temperature: parseFloat($('temperature').value), max_tokens: parseInt($('max_tokens').value, 10),
                source, family: $('family').value, text: $('text').value};
  $('new').disabled = true;
  $('task').replaceChildren(LM.el('p', {class: 'muted'}, `sampling ${body.k} responses…`));
  try {
    task = await LM.api('/api/rank/new', body);
  } catch (e) {
    $('task').replaceChildren();
    LM.showError($('error'), e.message);
    return;
  } finally { $('new').disabled = false; }
  order = task.responses.map((_, i) => i);
  tied = order.map(() => false);
  drawTask();
}

function move(p, q) {
  if (q < 0 || q >= order.length) return;
  const [x] = order.splice(p, 1);
  order.splice(q, 0, x);
  tied = order.map(() => false);
  drawTask();
}

function drawTask() {
  const list = LM.el('div', {id: 'responses'});
  order.forEach((r, p) => {
    if (p > 0) {
      list.append(LM.el('label', {class: 'inline tie-toggle'},
        LM.el('input', {type: 'checkbox', class: 'tie', 'data-position': p, checked: tied[p],
                        onchange: e => { tied[p] = e.target.checked; }}), `tie: ${letter(r)} is as good as ${letter(order[p - 1])}`));
    }
    const card = LM.el('div', {class: 'resp', draggable: 'true', 'data-response': r, 'data-position': p},
      LM.el('div', {class: 'rank'}, `${p + 1}`, LM.el('div', {class: 'small muted'}, letter(r))),
      LM.parts(task.responses[r].parts),
      LM.el('div', {class: 'moves'},
        LM.el('button', {class: 'plain up', title: 'move up', onclick: () => move(p, p - 1), disabled: p === 0}, '↑ up'),
        LM.el('button', {class: 'plain down', title: 'move down', onclick: () => move(p, p + 1), disabled: p === order.length - 1}, '↓ down')));
    card.addEventListener('dragstart', e => { e.dataTransfer.setData('text/plain', String(p)); card.classList.add('dragging'); });
    card.addEventListener('dragend', () => card.classList.remove('dragging'));
    card.addEventListener('dragover', e => e.preventDefault());
    card.addEventListener('drop', e => { e.preventDefault(); move(parseInt(e.dataTransfer.getData('text/plain'), 10), p); });
    list.append(card);
  });
  $('task').replaceChildren(
    LM.el('h3', {}, task.family === 'typed' ? 'Your prompt' : `Lab task: ${task.family}/${task.variant}`),
    ...LM.messages(task.prompt),
    LM.el('p', {class: 'small muted'}, 'Best first. Drag a response, or move it with ↑ ↓.'),
    list,
    LM.el('p', {}, LM.el('button', {id: 'submit', onclick: submit}, 'Submit ranking'), ' ',
          LM.el('button', {id: 'skip', class: 'plain', onclick: newTask}, 'Skip')));
}

function tieGroups() {
  const groups = [];
  order.forEach((r, p) => {
    if (p > 0 && tied[p]) {
      const last = groups.length && groups[groups.length - 1].includes(order[p - 1]) ? groups[groups.length - 1] : null;
      if (last) last.push(r); else groups.push([order[p - 1], r]);
    }
  });
  return groups;
}

async function submit() {
  const rater = $('rater').value.trim();
  LM.showError($('error'), '');
  let data;
  try {
    data = await LM.api('/api/rank/submit', {task: task.task, rater, ranking: order, ties: tieGroups()});
  } catch (e) { LM.showError($('error'), e.message); return; }
  localStorage.setItem('lm.serve.rater', rater);
  $('submit').disabled = true;
  const names = rs => rs.map(letter).join(' > ');
  const rate = a => a && a.rate !== null ? `${LM.pct(a.rate)} of ${a.pairs} pairs` : 'no pair to compare';
  const res = $('result');
  res.classList.remove('hidden');
  res.replaceChildren(LM.el('h3', {}, 'Saved'),
    LM.el('p', {}, `your ranking: ${names(order)}`),
    ...(data.gold_ranking.length ? [
      LM.el('p', {}, 'agreement with gold: ', LM.el('span', {class: 'agree', id: 'agree_gold'}, rate(data.agreement.gold)),
            ' · with the simulated panel: ', LM.el('span', {class: 'agree', id: 'agree_panel'}, rate(data.agreement.panel))),
      LM.el('p', {}, `gold: ${names(data.gold_ranking)} · panel: ${names(data.panel_ranking)}`),
      LM.el('table', {}, LM.el('tr', {}, LM.el('th', {}, 'response'), LM.el('th', {}, 'gold score'), LM.el('th', {}, 'gold utility')),
            data.gold_scores.map((g, i) => LM.el('tr', {}, LM.el('td', {}, letter(i)), LM.el('td', {}, LM.fmt(g, 3)),
                                                  LM.el('td', {}, LM.fmt(data.gold_utilities[i], 3)))))]
      : [LM.el('p', {class: 'muted'}, 'A typed prompt has no gold: saved without agreement.')]),
    LM.el('p', {}, LM.el('button', {onclick: newTask}, 'Next prompt')));
  showSummary(data.summary, null);
}

$('new').addEventListener('click', newTask);
init();
