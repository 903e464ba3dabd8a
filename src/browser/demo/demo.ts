/**
 * The demo page's script (dist/demo/demo.js; it imports the bundle beside it, ./micse.js): load a checkpoint, train
 * on the user's sentences with a live loss chart, STS-B dev before and after, similarity and nearest-neighbour
 * search, and the export as a zip. Every failure is shown in the page.
 */
import * as micse from '../index.js';

type Model = micse.Pretrained['model'];
type Tokenizer = micse.Pretrained['tokenizer'];

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`the page lacks #${id}`);
  return el as T;
};

let loaded: { model: Model; tokenizer: Tokenizer; label: string } | undefined;
let trainingSentences: string[] = [];
let vectors: { sentences: string[]; vectors: number[][] } | undefined;
let stopper: AbortController | undefined;

function showError(err: unknown): void {
  const text = err instanceof Error ? err.message : String(err);
  $('error').textContent = text;
  console.warn(text);
}
function clearError(): void {
  $('error').textContent = '';
}

/** Runs an action from a button: its error goes to the page, the button is disabled meanwhile. */
function action(id: string, run: () => Promise<void>): void {
  const button = $<HTMLButtonElement>(id);
  button.addEventListener('click', () => {
    clearError();
    button.disabled = true;
    run().catch(showError).finally(() => {
      button.disabled = false;
    });
  });
}
window.addEventListener('error', (e) => showError(e.error ?? e.message));
window.addEventListener('unhandledrejection', (e) => showError(e.reason));

// --- backend ----------------------------------------------------------------------------------------------------

async function useBackend(name: micse.BackendName): Promise<void> {
  const order: micse.BackendName[] = name === 'auto' ? ['webgpu', 'wasm', 'cpu'] : [name];
  const reasons: string[] = [];
  for (const b of order) {
    try {
      const sel = await micse.selectBackend(b);
      $('backend-name').textContent = sel.name;
      if (loaded !== undefined && name !== 'auto') $('ckpt-info').textContent += ' (reload it to move it to the new backend)';
      return;
    } catch (err) {
      reasons.push(`${b}: ${(err as Error).message}`);
    }
  }
  throw new Error(`no backend works here (${reasons.join('; ')})`);
}
action('backend-apply', () => useBackend($<HTMLSelectElement>('backend').value as micse.BackendName));

// --- checkpoint -------------------------------------------------------------------------------------------------

async function loadCheckpoint(source: string | File[], label: string): Promise<void> {
  $('ckpt-info').textContent = `loading ${label} ...`;
  const p = await micse.loadPretrained(source);
  loaded?.model.dispose();
  loaded = { model: p.model, tokenizer: p.tokenizer, label };
  vectors = undefined;
  const c = p.config;
  $('ckpt-info').textContent = `${label}: ${c.numHiddenLayers} layers, hidden ${c.hiddenSize}, vocabulary ${p.tokenizer.vocabSize}`;
  if (c.numHiddenLayers < 11 && $<HTMLSelectElement>('preset').value === 'micse') {
    $<HTMLSelectElement>('preset').value = 'tiny';
    applyPreset();
  }
}
action('ckpt-load', async () => {
  const v = $<HTMLInputElement>('ckpt-url').value.trim();
  if (v === '') throw new Error('give the URL of a checkpoint folder or a Hub name');
  await loadCheckpoint(v, v);
});
$<HTMLInputElement>('ckpt-files').addEventListener('change', (e) => {
  const files = [...((e.target as HTMLInputElement).files ?? [])];
  clearError();
  loadCheckpoint(files, `${files.length} files`).catch(showError);
});
const drop = $('drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const files = [...(e.dataTransfer?.files ?? [])];
  clearError();
  loadCheckpoint(files, `${files.length} dropped files`).catch(showError);
});

// --- sentences --------------------------------------------------------------------------------------------------

/**
 * The sentences of a txt (one a line) or csv/tsv file (`column`: a header name or a 0-based index; empty: the
 * first column), CSV/TSV read by the same rules as the trainer's corpus reader (src/data/delimited.ts).
 */
function readSentenceFile(name: string, text: string, column: string): string[] {
  const delimiter = name.endsWith('.tsv') ? '\t' : name.endsWith('.csv') ? ',' : null;
  if (delimiter === null) return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
  return micse.readDelimitedText(text, name, delimiter, { column }).map((r) => r.text);
}

function setSentences(list: string[]): void {
  trainingSentences = list;
  vectors = undefined;
  $('sent-info').textContent = `${list.length} sentences.`;
}
$<HTMLTextAreaElement>('sentences').addEventListener('input', (e) => {
  setSentences((e.target as HTMLTextAreaElement).value.split('\n').map((s) => s.trim()).filter((s) => s !== ''));
});
$<HTMLInputElement>('sent-file').addEventListener('change', (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (file === undefined) return;
  clearError();
  file.text().then((text) => {
    const list = readSentenceFile(file.name, text, $<HTMLInputElement>('sent-column').value.trim());
    $<HTMLTextAreaElement>('sentences').value = list.join('\n');
    setSentences(list);
  }).catch(showError);
});

// --- configuration ----------------------------------------------------------------------------------------------

function applyPreset(): void {
  const preset = $<HTMLSelectElement>('preset').value;
  const lambda = Number($<HTMLInputElement>('lambda').value);
  const objective = preset === 'simcse' ? { style: 'simcse' }
    : preset === 'tiny' ? { style: 'micse', lambda, minLayer: 2, maxLayer: 4 } : { style: 'micse', lambda };
  const config = {
    objective,
    data: { maxSeqLen: micse.defaultConfig().data.maxSeqLen },
    optim: { learningRate: preset === 'tiny' ? 5e-4 : 3e-5 },
    train: { batchSize: Number($<HTMLInputElement>('batch').value), maxSteps: Number($<HTMLInputElement>('steps').value), evalSteps: 1_000_000, seed: 42 },
  };
  $<HTMLTextAreaElement>('config').value = JSON.stringify(config, null, 2);
}
for (const id of ['preset', 'steps', 'batch', 'lambda']) $(id).addEventListener('change', applyPreset);
applyPreset();

/** The config object the page edits, as parsed: train checks it (mergeConfig), as it checks a config file. */
function readConfig(): micse.PartialTrainConfig {
  try {
    return JSON.parse($<HTMLTextAreaElement>('config').value) as micse.PartialTrainConfig;
  } catch (err) {
    throw new Error(`configuration: not valid JSON (${(err as Error).message})`);
  }
}

// --- training ---------------------------------------------------------------------------------------------------

const losses: { step: number; loss: number; infoNCE: number; ami: number | null }[] = [];

function drawChart(): void {
  const canvas = $<HTMLCanvasElement>('chart');
  const ctx = canvas.getContext('2d');
  if (ctx === null) return;
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (losses.length === 0) return;
  const series: [string, (p: (typeof losses)[number]) => number | null][] = [['#0969da', (p) => p.loss], ['#1a7f37', (p) => p.infoNCE], ['#bf3989', (p) => p.ami]];
  const values = losses.flatMap((p) => series.map(([, f]) => f(p))).filter((v): v is number => v !== null && Number.isFinite(v));
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const maxStep = Math.max(losses[losses.length - 1]!.step, 2);
  const x = (s: number) => 30 + ((s - 1) / (maxStep - 1)) * (w - 40);
  const y = (v: number) => h - 15 - ((v - lo) / Math.max(hi - lo, 1e-9)) * (h - 30);
  ctx.fillStyle = '#57606a';
  ctx.font = '10px sans-serif';
  ctx.fillText(hi.toFixed(3), 0, 12);
  ctx.fillText(lo.toFixed(3), 0, h - 4);
  for (const [color, f] of series) {
    ctx.strokeStyle = color;
    ctx.beginPath();
    let started = false;
    for (const p of losses) {
      const v = f(p);
      if (v === null || !Number.isFinite(v)) continue;
      if (started) ctx.lineTo(x(p.step), y(v));
      else ctx.moveTo(x(p.step), y(v));
      started = true;
    }
    ctx.stroke();
  }
  ctx.fillStyle = '#0969da';
  ctx.fillText('loss', w - 110, 12);
  ctx.fillStyle = '#1a7f37';
  ctx.fillText('InfoNCE', w - 85, 12);
  ctx.fillStyle = '#bf3989';
  ctx.fillText('AMI', w - 40, 12);
}

let stsbDev: micse.StsTaskData | undefined;
async function stsData(): Promise<micse.StsTaskData> {
  if (stsbDev !== undefined) return stsbDev;
  const res = await fetch('./sts-dev.csv');
  if (!res.ok) throw new Error(`./sts-dev.csv: HTTP ${res.status} (the STS-B dev file ships with the built page)`);
  stsbDev = { task: 'stsb-dev', subsets: [micse.parseStsBenchmark(await res.text(), 'sts-dev.csv', 'dev')] };
  return stsbDev;
}

const fmt = (v: number | null) => (v === null ? '-' : v.toFixed(4));
function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '-';
  return s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`;
}

action('train', async () => {
  if (loaded === undefined) throw new Error('load a checkpoint first');
  if (trainingSentences.length === 0) throw new Error('no sentences: paste some or upload a file');
  const config = readConfig();
  const sts = $<HTMLInputElement>('sts').checked ? await stsData() : undefined;
  losses.length = 0;
  drawChart();
  stopper = new AbortController();
  $<HTMLButtonElement>('stop').disabled = false;
  $('sts-result').textContent = sts === undefined ? 'STS-B dev: not evaluated' : 'STS-B dev: scoring before training ...';
  const started = performance.now();
  let total = Number.NaN;
  try {
    const result = await micse.train(config, {
      sentences: trainingSentences, model: loaded.model, tokenizer: loaded.tokenizer, signal: stopper.signal, ...(sts !== undefined ? { stsbDev: sts } : {}),
      onStep: (line) => {
        if (Number.isNaN(total)) total = config?.train?.maxSteps ?? Number.NaN;
        losses.push({ step: line.step, loss: line.loss, infoNCE: line.infoNCE, ami: line.ami });
        const perStep = (performance.now() - started) / 1000 / line.step;
        $('p-step').textContent = Number.isNaN(total) ? String(line.step) : `${line.step}/${total}`;
        $('p-loss').textContent = fmt(line.loss);
        $('p-infonce').textContent = fmt(line.infoNCE);
        $('p-ami').textContent = fmt(line.ami);
        $('p-sps').textContent = line.sentencesPerSecond.toFixed(1);
        $('p-eta').textContent = Number.isNaN(total) ? '-' : fmtSeconds((total - line.step) * perStep);
        drawChart();
      },
    });
    vectors = undefined;
    $('p-eta').textContent = result.stopped ? `stopped at step ${result.steps}` : 'done';
    if (result.stsbDev !== undefined) {
      $('sts-result').textContent = `STS-B dev Spearman x 100: before ${result.stsbDev.before.toFixed(2)}, after ${result.stsbDev.after.toFixed(2)}`;
    }
    document.body.dataset['trained'] = String(result.steps);
  } finally {
    stopper = undefined;
    $<HTMLButtonElement>('stop').disabled = true;
  }
});
$('stop').addEventListener('click', () => stopper?.abort());

// --- similarity and search --------------------------------------------------------------------------------------

function requireModel(): { model: Model; tokenizer: Tokenizer } {
  if (loaded === undefined) throw new Error('load a checkpoint first');
  return loaded;
}

action('sim', async () => {
  const { model, tokenizer } = requireModel();
  const a = $<HTMLInputElement>('sim-a').value.trim();
  const b = $<HTMLInputElement>('sim-b').value.trim();
  if (a === '' || b === '') throw new Error('give two sentences');
  const [va, vb] = await micse.embed(model, tokenizer, [a, b]);
  $('sim-result').textContent = `cosine ${micse.cosine(va!, vb!).toFixed(4)}`;
});

action('search', async () => {
  const { model, tokenizer } = requireModel();
  const q = $<HTMLInputElement>('query').value.trim();
  if (q === '') throw new Error('type a query');
  if (trainingSentences.length === 0) throw new Error('no sentences to search: paste some or upload a file');
  if (vectors === undefined || vectors.sentences !== trainingSentences) {
    vectors = { sentences: trainingSentences, vectors: await micse.embed(model, tokenizer, trainingSentences) };
  }
  const [vq] = await micse.embed(model, tokenizer, [q]);
  const hits = vectors.vectors.map((v, i) => ({ i, score: micse.cosine(vq!, v) })).sort((x, y) => y.score - x.score).slice(0, 5);
  const table = $('hits');
  table.replaceChildren(...hits.map((h) => {
    const tr = document.createElement('tr');
    const score = document.createElement('td');
    score.textContent = h.score.toFixed(4);
    const text = document.createElement('td');
    text.textContent = vectors!.sentences[h.i]!;
    tr.append(score, text);
    return tr;
  }));
});

// --- export -----------------------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A zip archive of `files` (stored, no compression; ZIP64 is not needed below 4 GB). */
function zip(files: Record<string, Uint8Array>): Blob {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(files)) {
    const nameBytes = new TextEncoder().encode(name);
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(6, 0x0800, true); // UTF-8 names
    local.setUint32(14, crc, true);
    local.setUint32(18, data.length, true);
    local.setUint32(22, data.length, true);
    local.setUint16(26, nameBytes.length, true);
    const entry = new DataView(new ArrayBuffer(46));
    entry.setUint32(0, 0x02014b50, true);
    entry.setUint16(4, 20, true);
    entry.setUint16(6, 20, true);
    entry.setUint16(8, 0x0800, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, data.length, true);
    entry.setUint32(24, data.length, true);
    entry.setUint16(28, nameBytes.length, true);
    entry.setUint32(42, offset, true);
    parts.push(new Uint8Array(local.buffer), nameBytes, data);
    central.push(new Uint8Array(entry.buffer), nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const centralSize = central.reduce((n, p) => n + p.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, central.length / 2, true);
  end.setUint16(10, central.length / 2, true);
  end.setUint32(12, centralSize, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, new Uint8Array(end.buffer)] as BlobPart[], { type: 'application/zip' });
}

action('export', async () => {
  const { model, tokenizer } = requireModel();
  const format = $<HTMLSelectElement>('format').value as micse.FileExportFormat;
  const files = await micse.exportFiles(model, tokenizer, format);
  const blob = zip(files);
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `micse-${format}.zip`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  $('export-info').textContent = `${a.download}: ${Object.keys(files).length} files, ${(blob.size / 2 ** 20).toFixed(1)} MiB`;
  document.body.dataset['exported'] = Object.keys(files).join(',');
});

// --- start ------------------------------------------------------------------------------------------------------

useBackend('auto').then(() => {
  document.body.dataset['ready'] = 'true';
}).catch(showError);
