// recon-serve viewer: upload a shape, see its predicted parts in 3D, its classes, zero-shot scores,
// and search the server's shape index by text or by the current shape.
import { api, ApiError } from './api.js';
import { Viewer } from './viewer.js';

// Distinct, colour-blind-friendlier hues for parts (assigned in order of part id within one shape).
const PALETTE = [
  '#4477aa', '#ee6677', '#228833', '#ccbb44', '#66ccee', '#aa3377', '#ee8866', '#44bb99',
  '#bbcc33', '#9977dd', '#dd7722', '#117733', '#882255', '#99ddff', '#555555', '#e0a0c0',
];
const UNLABELLED = '#8a93a3';
const GLTF_LIKE = /\.(glb|gltf)$/i;  // glTF is y-up by specification

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'style') node.setAttribute('style', value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
};
const pct = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.0005 ? 0 : 1)}%`;
const hexToRgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);

const state = {
  current: null,  // {kind: 'file', file} | {kind: 'stored', id}
  run: 0,         // bumped per analysis, so late answers for an older shape are dropped
  card: null,
};

let viewer = null;

// ------------------------------------------------------------------ messages

function setStatus(text, busy = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('busy', busy);
  document.body.dataset.busy = busy ? '1' : '0';
}

function clearErrors() {
  $('errors').replaceChildren();
}

// One readable message per distinct error; `what` says which action failed.
function showError(what, err) {
  const code = err instanceof ApiError ? err.code : 'client_error';
  const detail = err instanceof ApiError ? err.detail : (err && err.message) || String(err);
  const box = $('errors');
  const key = `${code}\u0000${detail}`;
  for (const node of box.children) {
    if (node.dataset.key === key) {
      node.dataset.count = String(Number(node.dataset.count) + 1);
      return;
    }
  }
  const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : '';
  const close = el('button', { type: 'button', title: 'dismiss', ariaLabel: 'dismiss', textContent: '×' });
  const node = el('div', { className: 'error', dataset: { key, code, count: '1' } },
    el('b', { textContent: `${what}: ${detail || code}` }),
    el('code', { textContent: `${code}${status}` }),
    close);
  close.addEventListener('click', () => node.remove());
  box.append(node);
}

// ------------------------------------------------------------------ rendering of results

function renderBars(list, rows, note) {
  list.replaceChildren(...rows.map(({ name, value, title }) =>
    el('li', { title: title || '' },
      el('span', { className: 'name', textContent: name }),
      el('span', { className: 'value', textContent: pct(value) }),
      el('span', { className: 'bar' }, el('span', { style: `width:${Math.max(0.5, 100 * value).toFixed(1)}%` })))));
  if (note !== undefined) list.dataset.note = note;
}

function renderClasses(result) {
  renderBars($('class-list'), result.labels.map((l) => ({ name: l.label, value: l.probability })));
  $('classify-note').textContent = '';
}

function renderZeroShot(result) {
  renderBars($('zero-shot-list'), result.scores.map((s) => ({
    name: s.label, value: s.probability, title: `cosine similarity ${s.similarity.toFixed(3)}`,
  })));
}

const partName = (result, id) => result.part_names[id] ?? `part ${id}`;
// "armchair/seat" reads as "seat" under the heading "Parts (armchair)"
const shortPartName = (result, id) => {
  const name = partName(result, id);
  const prefix = result.category ? `${result.category}/` : null;
  return prefix && name.startsWith(prefix) && name.length > prefix.length ? name.slice(prefix.length) : name;
};

// Colour each point by its part; the legend lists the parts present, with their share of points.
function renderSegmentation(result, upAxis) {
  const counts = new Map();
  for (const label of result.labels) counts.set(label, (counts.get(label) || 0) + 1);
  const ids = [...counts.keys()].sort((a, b) => a - b);
  const colourOf = new Map(ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  const rgb = new Map(ids.map((id) => [id, hexToRgb(colourOf.get(id))]));
  const grey = hexToRgb(UNLABELLED);
  viewer.show(result.points, result.labels.map((l) => rgb.get(l) || grey), upAxis);
  const total = result.labels.length || 1;
  $('legend').replaceChildren(...ids.map((id) => el('li', { dataset: { part: String(id) } },
    el('span', { className: 'swatch', style: `background:${colourOf.get(id)}` }),
    el('span', { className: 'name', title: partName(result, id), textContent: shortPartName(result, id) }),
    el('span', { className: 'count', textContent: pct(counts.get(id) / total) }))));
  $('category').textContent = result.category ? `(${result.category})` : '';
  $('viewport').dataset.points = String(result.points.length);
}

function resetResults() {
  for (const id of ['class-list', 'legend', 'zero-shot-list']) $(id).replaceChildren();
  $('category').textContent = '';
  $('classify-note').textContent = '';
  delete $('viewport').dataset.points;
}

// ------------------------------------------------------------------ actions

const upAxis = () => document.querySelector('input[name="up_axis"]:checked').value;
const zeroShotLabels = () => $('zero-shot-labels').value.split(',').map((s) => s.trim()).filter(Boolean);

function setCurrent(current) {
  state.current = current;
  $('more-like-this').disabled = !current;
  $('view-note').hidden = !(current && current.kind === 'stored');
}

async function analyse(file) {
  const run = ++state.run;
  const axis = upAxis();
  setCurrent({ kind: 'file', file });
  $('record').hidden = true;
  document.querySelectorAll('.result.selected').forEach((n) => n.classList.remove('selected'));
  clearErrors();
  resetResults();
  setStatus(`Analysing ${file.name}…`, true);
  const fail = (err) => {
    if (run === state.run) showError(`Could not analyse ${file.name}`, err);
    return null;
  };
  const segment = api.segment(file, { upAxis: axis, nPoints: $('n-points').value }).then((r) => {
    if (run === state.run) renderSegmentation(r, axis);
    return r;
  }, (err) => {
    if (run === state.run) viewer.clear();
    return fail(err);
  });
  const classify = api.classify(file, { upAxis: axis, k: 5 }).then((r) => {
    if (run === state.run) renderClasses(r);
    return r;
  }, (err) => {
    // a model without a classification head still segments and scores zero-shot labels
    if (err instanceof ApiError && err.code === 'unknown_label_set') {
      if (run === state.run) $('classify-note').textContent = '(no classifier: use zero-shot)';
      return null;
    }
    return fail(err);
  });
  const labels = zeroShotLabels();
  // the same bad file fails all three calls: one message, whichever answers first
  const zero = labels.length ? runZeroShot(file, labels, run, axis, `Could not analyse ${file.name}`) : Promise.resolve(null);
  const [seg, cls] = await Promise.all([segment, classify, zero]);
  if (run !== state.run) return;
  if (seg || cls) {
    const parts = seg ? `${seg.points.length.toLocaleString('en')} points` : 'no parts';
    const top = cls && cls.labels.length ? ` · ${cls.labels[0].label}` : '';
    setStatus(`${file.name} · ${parts}${top}`);
  } else {
    setStatus(`${file.name}: could not be analysed`);
  }
}

async function runZeroShot(file, labels, run = state.run, axis = upAxis(), what = 'Zero-shot failed') {
  $('zero-shot-list').replaceChildren(el('li', { className: 'pending', textContent: 'scoring…' }));
  try {
    const result = await api.zeroShot(file, labels, { upAxis: axis });
    if (run === state.run) renderZeroShot(result);
    return result;
  } catch (err) {
    if (run === state.run) {
      $('zero-shot-list').replaceChildren();
      showError(what, err);
    }
    return null;
  }
}

async function searchWith(what, call) {
  $('search-note').textContent = 'searching…';
  try {
    const result = await call();
    renderHits(result.hits, what);
  } catch (err) {
    $('search-note').textContent = '';
    showError('Search failed', err);
  }
  refreshIndexSize();
}

function searchK() {
  const k = Number.parseInt($('search-k').value, 10);
  return Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : 12;
}

function metadataText(metadata) {
  const entries = Object.entries(metadata || {});
  return entries.length ? entries.map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ') : 'no metadata';
}

function renderHits(hits, what) {
  $('search-note').textContent = hits.length ? `${hits.length} nearest to ${what}` : `nothing in the index is near ${what}`;
  $('results').replaceChildren(...hits.map((hit) => {
    const card = el('button', { type: 'button', className: 'result', title: `open ${hit.id}`, dataset: { id: hit.id } },
      el('span', { className: 'id', textContent: hit.id }),
      el('span', { className: 'score', textContent: `score ${hit.score.toFixed(3)}` }),
      el('span', { className: 'meta', textContent: metadataText(hit.metadata) }));
    card.addEventListener('click', () => openStored(hit.id, card));
    return card;
  }));
}

// A search hit: the index stores its embedding and metadata, not its geometry.
async function openStored(id, card) {
  document.querySelectorAll('.result.selected').forEach((n) => n.classList.remove('selected'));
  if (card) card.classList.add('selected');
  try {
    const rec = await api.shape(id);
    state.run++;
    resetResults();
    viewer.clear();
    setCurrent({ kind: 'stored', id: rec.id });
    const added = rec.added_at ? new Date(rec.added_at * 1000).toLocaleString() : '';
    const rows = [['id', rec.id], ['model', rec.model_version || '?'], ['added', added],
      ...Object.entries(rec.metadata || {}).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)])];
    $('record-body').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', { textContent: v })]));
    $('record').hidden = false;
    $('view-note').textContent = `“${rec.id}” is a stored shape: the index keeps its embedding and metadata, not its ` +
      'geometry. “More like this” searches with it; drop its file here to see it.';
    setStatus(`stored shape ${rec.id}`);
  } catch (err) {
    showError(`Could not open ${id}`, err);
  }
}

function moreLikeThis() {
  const cur = state.current;
  if (!cur) return;
  if (cur.kind === 'file') {
    searchWith(cur.file.name, () => api.searchByFile(cur.file, searchK(), { upAxis: upAxis() }));
  } else {
    searchWith(cur.id, () => api.searchById(cur.id, searchK()));
  }
}

async function refreshIndexSize() {
  try {
    const ready = await api.ready();
    if (typeof ready.index_size === 'number') {
      const n = ready.index_size;
      $('index-size').textContent = `(${n.toLocaleString('en')} shape${n === 1 ? '' : 's'})`;
    }
  } catch {
    // the header already reports an unreachable server
  }
}

async function loadModelInfo() {
  try {
    const card = await api.models();
    state.card = card;
    const classes = (card.class_names || []).length;
    const parts = (card.part_names || []).length;
    $('model-info').textContent = `model ${card.model_version} · ${card.backend} · ${classes} classes · ` +
      `${parts} parts · ${card.num_points || '?'} points`;
  } catch (err) {
    $('model-info').textContent = 'server not reachable';
    showError('Could not load the model card', err);
  }
  refreshIndexSize();
}

// ------------------------------------------------------------------ wiring

function pickFile(file) {
  if (!file) return;
  if (GLTF_LIKE.test(file.name)) document.querySelector('input[name="up_axis"][value="y"]').checked = true;
  analyse(file);
}

function wire() {
  const drop = $('drop-zone');
  const input = $('file-input');
  drop.addEventListener('click', (e) => {
    if (e.target !== input && !(e.target instanceof HTMLLabelElement)) input.click();
  });
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      input.click();
    }
  });
  input.addEventListener('change', () => {
    pickFile(input.files[0]);
    input.value = '';  // choosing the same file again re-runs it
  });
  for (const type of ['dragenter', 'dragover']) {
    window.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add('dragging');
    });
  }
  for (const type of ['dragleave', 'dragend']) {
    window.addEventListener(type, (e) => {
      if (type === 'dragend' || e.relatedTarget === null) drop.classList.remove('dragging');
    });
  }
  // a file dropped anywhere on the page (not only on the drop zone) is taken
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('dragging');
    const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (file) pickFile(file);
  });

  const rerun = () => {
    if (state.current && state.current.kind === 'file') analyse(state.current.file);
  };
  document.querySelectorAll('input[name="up_axis"]').forEach((r) => r.addEventListener('change', rerun));
  $('n-points').addEventListener('change', rerun);

  $('zero-shot-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const labels = zeroShotLabels();
    if (!labels.length) {
      showError('Zero-shot', new Error('enter one or more labels, separated by commas'));
      return;
    }
    if (!state.current || state.current.kind !== 'file') {
      showError('Zero-shot', new Error('drop a shape file first: zero-shot scores need its geometry'));
      return;
    }
    runZeroShot(state.current.file, labels);
  });

  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('search-text').value.trim();
    if (!text) {
      showError('Search', new Error('type a description to search for'));
      return;
    }
    searchWith(`“${text}”`, () => api.searchText(text, searchK()));
  });
  $('more-like-this').addEventListener('click', moreLikeThis);
}

function start() {
  try {
    viewer = new Viewer($('viewport'));
    window.reconViewer = viewer;  // for debugging and the browser test
  } catch (err) {
    showError('3D view unavailable (WebGL failed)', err);
    viewer = { show() {}, clear() {} };
  }
  wire();
  loadModelInfo();
  document.body.dataset.ready = '1';
}

start();
