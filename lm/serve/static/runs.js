// The runs page: a run's stages, links to the other views, its metric curves and its report card.
'use strict';

LM.header('runs');
const $ = id => document.getElementById(id);
const COLOURS = ['#2f5bd3', '#d3572f', '#2a9d55', '#8b3fd1', '#c99a1a', '#1aa3c9'];

async function init() {
  let data;
  try { data = await LM.runs(); } catch (e) { LM.showError($('error'), e.message); return; }
  const link = name => LM.el('a', {href: `/?run=${encodeURIComponent(name)}`}, name === '.' ? '. (the workdir)' : name);
  $('runs').replaceChildren(data.runs.length ? LM.el('div', {}, ...data.runs.map(r =>
    LM.el('span', {style: 'margin-right:14px'}, r.name === LM.run ? LM.el('b', {}, link(r.name)) : link(r.name))))
    : LM.el('div', {class: 'notice'}, 'No run here yet: nothing has finished in this workdir.'));
  const run = LM.currentRun(data);
  if (!run) { LM.showError($('error'), `unknown run ${JSON.stringify(LM.run)}`); return; }
  $('run_title').textContent = `Run ${run.name}`;
  const q = `?run=${encodeURIComponent(run.name)}`;
  $('links').replaceChildren(LM.el('p', {},
    run.models.length ? LM.el('a', {href: `/chat${q}`}, `chat with ${run.models.join(', ')}`) : 'no trained model to chat with',
    ' · ', LM.el('a', {href: `/trajectory${q}`}, `token trajectories (${run.traces.length} eval trace files, `
                                              + `${run.rollouts.length ? 'RLHF rollouts' : 'no RLHF rollouts saved'})`),
    ' · ', LM.el('a', {href: `/rank${q}`}, 'rank responses'),
    run.report ? [' · ', LM.el('a', {href: `/report.html${q}`, target: '_blank'}, 'report card')] : null));
  $('stages').replaceChildren(LM.el('table', {},
    LM.el('tr', {}, LM.el('th', {}, 'stage'), LM.el('th', {}, 'kind'), LM.el('th', {}, 'wall time'), LM.el('th', {}, 'final numbers')),
    run.stages.map(s => LM.el('tr', {}, LM.el('td', {}, s.name), LM.el('td', {}, s.kind), LM.el('td', {}, `${LM.fmt(s.wall_s, 1)} s`),
      LM.el('td', {class: 'kv'}, Object.entries(s.metrics).filter(([k]) => !['wall_s'].includes(k)).slice(0, 8)
        .map(([k, v]) => `${k}=${LM.num(v)}`).join('  '))))));
  $('report').replaceChildren(run.report
    ? LM.el('iframe', {class: 'report', src: `/report.html${q}`, title: 'report card'})
    : LM.el('div', {class: 'notice'}, 'No report card yet: python -m lm.report --workdir=<run> writes it.'));
  try { charts((await LM.api(`/api/metrics${q}`)).rows); } catch (e) { LM.showError($('error'), e.message); }
}

// One chart per stage and metric family (loss and eval_loss together, ...).
function charts(rows) {
  const box = $('charts');
  if (!rows.length) { box.replaceChildren(LM.el('div', {class: 'notice'}, 'No metrics.jsonl rows in this run.')); return; }
  const byStage = {};
  for (const r of rows) (byStage[r.stage] = byStage[r.stage] || []).push(r);
  const out = [];
  for (const [stage, rs] of Object.entries(byStage)) {
    const keys = [...new Set(rs.flatMap(r => Object.keys(r)))].filter(k => !['stage', 'step'].includes(k)
      && rs.filter(r => typeof r[k] === 'number').length >= 2);
    const groups = {};
    for (const k of keys) {
      const g = k.replace(/^eval_/, '');
      (groups[g] = groups[g] || []).push(k);
    }
    const preferred = ['loss', 'proxy_reward', 'gold_reward', 'kl', 'accuracy', 'reward'];
    const names = Object.keys(groups).sort((a, b) => (preferred.indexOf(a) + 1 || 99) - (preferred.indexOf(b) + 1 || 99));
    for (const g of names.slice(0, 4)) out.push(chart(`${stage} · ${g}`, groups[g], rs));
  }
  box.replaceChildren(...out);
}

function chart(title, keys, rows) {
  const W = 360, H = 200, L = 44, R = 8, T = 10, B = 22;
  const series = keys.map(k => rows.filter(r => typeof r[k] === 'number' && Number.isFinite(r[k])).map(r => [r.step, r[k]]));
  const xs = series.flat().map(p => p[0]), ys = series.flat().map(p => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = x => L + (W - L - R) * (x - x0) / ((x1 - x0) || 1);
  const sy = y => H - B - (H - T - B) * (y - y0) / ((y1 - y0) || 1);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  add('line', {class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B});
  add('line', {class: 'axis', x1: L, y1: T, x2: L, y2: H - B});
  add('text', {x: 2, y: sy(y1) + 4}, LM.fmt(y1, 3));
  add('text', {x: 2, y: sy(y0)}, LM.fmt(y0, 3));
  add('text', {x: L, y: H - 6}, `step ${x0}`);
  add('text', {x: W - R - 50, y: H - 6}, `${x1}`);
  series.forEach((s, i) => {
    if (!s.length) return;
    add('polyline', {class: 'line', stroke: COLOURS[i % COLOURS.length], points: s.map(([x, y]) => `${sx(x)},${sy(y)}`).join(' ')});
    if (s.length < 12) s.forEach(([x, y]) => add('circle', {cx: sx(x), cy: sy(y), r: 2.5, fill: COLOURS[i % COLOURS.length]}));
  });
  const legend = LM.el('div', {class: 'small'}, keys.map((k, i) => LM.el('span', {style: `color:${COLOURS[i % COLOURS.length]};margin-right:10px`}, `— ${k}`)));
  return LM.el('div', {class: 'chart', 'data-title': title}, LM.el('div', {class: 'small'}, LM.el('b', {}, title)), svg, legend);
}

init();
