/**
 * The attention MI kernels of the host backends, cpu and wasm (the ops: index.ts; the method: src/losses/attentionMI.ts):
 * the kernels webgpu.ts runs, as loops over host memory, so that the term is 7 kernels instead of ~250 stock ones
 * (regroup transposes, a TopK over every row, the Gaussian MI composite and their gradients).
 * Row r, column c of view i of the regrouped matrices are read straight from `attentions [2B, L, H, T, T]`:
 *   attentions[2b + i, 2j + m, k, t, z]   with r = (b*H + k)*2 + m, c = j*T*T + t*T + z
 * so a row is L/2 runs of T*T contiguous elements (`rowRuns`).
 *
 * The draw is the stock path's exactly (the positions and their order): keys are seededUniform's 24-bit integers at
 * flat index r*N + c, invalid positions keyed -1, tf.topk's order (key descending, equal keys by increasing index):
 * a 256-bin histogram of the valid keys' top 8 bits finds the bin holding the take-th largest key, the keys from that
 * bin up (gathered in increasing index order) are put in descending key order by a stable radix sort (three 8-bit
 * passes), so equal keys keep increasing index order, and the invalid positions follow in increasing index order.
 * The per-row MI, the value and the gradient follow the composed ops' arithmetic (logs and quotients rounded to
 * float32 as the cpu backend rounds each op's output, sums accumulated in float64 as its Sum does), with the gradient
 * of webgpu.ts's module comment.
 */
import { tf } from '../../model/tf.js';
import { hostF32, hostValues, makeHostOutput, type HostBackend } from '../platform/hostBackend.js';
import { registerOp } from '../registry.js';
import { seedKeys, uniformBitsAt } from '../dropout/index.js';
import { COUNTS, dims, DRAW, DRAWN, GRAD, MI, PLAN, VALUE, type DrawAttrs, type MIAttrs, type PlanAttrs } from './index.js';

/** Bits of a draw key (seededUniform's 24 random bits). */
const KEY_BITS = 24;
/** Bits of the histogram bin and of a radix digit: 8. */
const DIGIT_BITS = 8;
const BINS = 1 << DIGIT_BITS;
/** The histogram bin of a key: its top 8 bits. */
const BIN_SHIFT = KEY_BITS - DIGIT_BITS;

const f32 = Math.fround;

/** Where row r of view `view` lives: the first flat index of each of its L/2 runs of TT elements. */
function rowRuns(r: number, view: number, L: number, H: number, TT: number, out: Int32Array): void {
  const b = Math.floor(r / (2 * H));
  const km = r - b * 2 * H;
  const k = km >> 1;
  const m = km & 1;
  for (let j = 0; j < L / 2; j++) out[j] = (((2 * b + view) * L + 2 * j + m) * H + k) * TT;
}

/** The flat index of column c given a row's runs. */
function flatOf(runs: Int32Array, TT: number, c: number): number {
  const j = Math.floor(c / TT);
  return runs[j]! + c - j * TT;
}

/** The regrouped geometry of `attentions` (index.ts dims) and scratch for one row's runs of each view. */
interface Geometry {
  L: number;
  H: number;
  TT: number;
  R: number;
  N: number;
  xRuns: Int32Array;
  yRuns: Int32Array;
}

function geometry(attentions: tf.TensorInfo): Geometry {
  const { L, H, TT, R, N } = dims(attentions);
  return { L, H, TT, R, N, xRuns: new Int32Array(L / 2), yRuns: new Int32Array(L / 2) };
}

function backendOf(backend: unknown): HostBackend {
  return backend as HostBackend;
}

const countsKernel: tf.KernelFunc = ({ inputs, backend }) => {
  const b = backendOf(backend);
  const attentions = inputs['attentions']!;
  const g = geometry(attentions);
  const out = makeHostOutput(b, [g.R], 'float32');
  const a = hostF32(b, attentions);
  const counts = hostF32(b, out);
  const ok = new Uint8Array(g.N);
  for (let r = 0; r < g.R; r++) counts[r] = validOfRow(a, g, r, ok);
  return out;
};

/** planRows of attentionMI.ts: [rowMask (R), rows, samples, scale]. */
const planKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { targetSamples, scaleEps, N } = attrs as unknown as PlanAttrs;
  const countsT = inputs['counts']!;
  const R = countsT.shape[0]!;
  const out = makeHostOutput(b, [R + 3], 'float32');
  const counts = hostF32(b, countsT);
  let full = 0;
  let nonEmpty = 0;
  let minCount = Infinity;
  let sumFull = 0;
  let sumAll = 0;
  for (let r = 0; r < R; r++) {
    const c = counts[r]!;
    if (c >= targetSamples) {
      full++;
      sumFull += c;
    }
    if (c > 0) {
      nonEmpty++;
      minCount = Math.min(minCount, c);
    }
    sumAll += c;
  }
  const anyFull = full > 0;
  const samples = anyFull ? targetSamples : nonEmpty > 0 ? Math.min(minCount, targetSamples) : 0;
  const plan = hostF32(b, out);
  let rows = 0;
  for (let r = 0; r < R; r++) {
    const c = counts[r]!;
    const kept = (anyFull ? c >= targetSamples : c > 0) && samples > 0;
    plan[r] = kept ? 1 : 0;
    if (kept) rows++;
  }
  const ratio = f32((anyFull ? sumFull : sumAll) / Math.max(f32((anyFull ? rows : R) * N), 1));
  plan[R] = rows;
  plan[R + 1] = samples;
  plan[R + 2] = f32(f32(ratio * ratio) + f32(scaleEps));
  return out;
};

/**
 * The draw into `result [R, S]` (rankSamplePositions): `validRow(r, ok)` sets ok[c] to 1 where row r may draw
 * position c, else 0. Keys and order as the module comment.
 */
function drawRows(R: number, N: number, S: number, seed: number, validRow: (r: number, ok: Uint8Array) => void, result: Int32Array): void {
  const [k1, k2] = seedKeys(seed);
  const ok = new Uint8Array(N);
  const cols = new Int32Array(N);
  const keys = new Int32Array(N);
  const hist = new Int32Array(BINS);
  const sorting = { keys: new Int32Array(N), cols: new Int32Array(N), spareKeys: new Int32Array(N), spareCols: new Int32Array(N), digits: new Int32Array(BINS) };
  for (let r = 0; r < R; r++) {
    validRow(r, ok);
    let valid = 0;
    hist.fill(0);
    for (let c = 0; c < N; c++) {
      if (ok[c] === 0) continue;
      const key = uniformBitsAt(r * N + c, k1, k2);
      cols[valid] = c;
      keys[valid] = key;
      hist[key >>> BIN_SHIFT]!++;
      valid++;
    }
    const take = Math.min(S, valid);
    // The lowest bin whose keys (with every higher bin's) reach `take`: only those keys can be taken.
    let lowBin = BINS;
    for (let above = 0; lowBin > 0 && above < take;) above += hist[--lowBin]!;
    let m = 0;
    for (let e = 0; e < valid; e++) {
      if (keys[e]! >>> BIN_SHIFT < lowBin) continue;
      sorting.keys[m] = keys[e]!;
      sorting.cols[m++] = cols[e]!;
    }
    const ranked = sortDescending(sorting, m); // the first `take` are the draw
    const row = r * S;
    for (let s = 0; s < take; s++) result[row + s] = ranked[s]!;
    // Ranks take..S-1: the invalid positions (key -1) in increasing index order.
    for (let c = 0, s = take; c < N && s < S; c++) if (ok[c] === 0) result[row + s++] = c;
  }
}

/**
 * The columns of the first `m` (key, column) pairs of `a` in descending key order, equal keys in the order they are
 * in (a stable LSD radix sort over the keys' three bytes, between a's arrays and its spares; `digits` is scratch).
 */
function sortDescending(a: { keys: Int32Array; cols: Int32Array; spareKeys: Int32Array; spareCols: Int32Array; digits: Int32Array },
  m: number): Int32Array {
  let [keys, cols, toKeys, toCols] = [a.keys, a.cols, a.spareKeys, a.spareCols];
  const count = a.digits;
  const top = BINS - 1;
  for (let shift = 0; shift < KEY_BITS; shift += DIGIT_BITS) {
    count.fill(0);
    for (let e = 0; e < m; e++) count[top - ((keys[e]! >>> shift) & top)]!++;
    for (let d = 0, sum = 0; d < BINS; d++) {
      const c = count[d]!;
      count[d] = sum;
      sum += c;
    }
    for (let e = 0; e < m; e++) {
      const at = count[top - ((keys[e]! >>> shift) & top)]!++;
      toKeys[at] = keys[e]!;
      toCols[at] = cols[e]!;
    }
    [keys, cols, toKeys, toCols] = [toKeys, toCols, keys, cols];
  }
  return cols;
}

/** ok[c] = 1 where both views of row r are > 0 at column c (the valid entries), else 0; returns their count. */
function validOfRow(a: Float32Array, g: Geometry, r: number, ok: Uint8Array): number {
  rowRuns(r, 0, g.L, g.H, g.TT, g.xRuns);
  rowRuns(r, 1, g.L, g.H, g.TT, g.yRuns);
  const TT = g.TT;
  let n = 0;
  for (let j = 0; j < g.L / 2; j++) {
    const x0 = g.xRuns[j]!;
    const y0 = g.yRuns[j]!;
    const c0 = j * TT;
    for (let e = 0; e < TT; e++) {
      const v = a[x0 + e]! > 0 && a[y0 + e]! > 0 ? 1 : 0;
      ok[c0 + e] = v;
      n += v;
    }
  }
  return n;
}

const drawKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { samples, seed } = attrs as unknown as DrawAttrs;
  const attentions = inputs['attentions'];
  if (attentions !== undefined) {
    const g = geometry(attentions);
    const out = makeHostOutput(b, [g.R, samples], 'int32');
    const a = hostF32(b, attentions);
    drawRows(g.R, g.N, samples, seed, (r, ok) => validOfRow(a, g, r, ok), hostValues(b, out) as Int32Array);
    return out;
  }
  const validT = inputs['valid']!;
  const [R, N] = validT.shape as [number, number];
  const out = makeHostOutput(b, [R, samples], 'int32');
  const valid = hostValues(b, validT);
  drawRows(R, N, samples, seed, (r, ok) => {
    for (let c = 0; c < N; c++) ok[c] = valid[r * N + c] !== 0 ? 1 : 0;
  }, hostValues(b, out) as Int32Array);
  return out;
};

/**
 * One row's Gaussian MI statistics over its drawn samples (the composed ops' gaussianMI): centred logs in `cx`,
 * `cy` (`used` of them), their sums of squares and products, the norms, rho and its clamp.
 */
interface RowStats {
  used: number;
  n: number;
  Qx: number;
  Qy: number;
  P: number;
  nx: number;
  ny: number;
  rho: number;
  r: number;
  q: number;
}

function rowStats(a: Float32Array, g: Geometry, positions: Int32Array, S: number, row: number, used: number,
  n: number, eps2: number, rhoMax: number, cx: Float64Array, cy: Float64Array): RowStats {
  rowRuns(row, 0, g.L, g.H, g.TT, g.xRuns);
  rowRuns(row, 1, g.L, g.H, g.TT, g.yRuns);
  let sx = 0;
  let sy = 0;
  for (let s = 0; s < used; s++) {
    const p = positions[row * S + s]!;
    cx[s] = f32(Math.log(a[flatOf(g.xRuns, g.TT, p)]!));
    cy[s] = f32(Math.log(a[flatOf(g.yRuns, g.TT, p)]!));
    sx += cx[s]!;
    sy += cy[s]!;
  }
  const mx = f32(f32(sx) / n);
  const my = f32(f32(sy) / n);
  let Qx = 0;
  let Qy = 0;
  let P = 0;
  for (let s = 0; s < used; s++) {
    cx[s] = f32(cx[s]! - mx);
    cy[s] = f32(cy[s]! - my);
    Qx += f32(cx[s]! * cx[s]!);
    Qy += f32(cy[s]! * cy[s]!);
    P += f32(cx[s]! * cy[s]!);
  }
  Qx = f32(Qx);
  Qy = f32(Qy);
  P = f32(P);
  const nx = f32(Math.sqrt(Math.max(Qx, eps2)));
  const ny = f32(Math.sqrt(Math.max(Qy, eps2)));
  const rho = f32(P / f32(nx * ny));
  const r = Number.isNaN(rho) ? rho : Math.min(Math.max(rho, -rhoMax), rhoMax);
  const q = f32(f32(1 - r) * f32(1 + r));
  return { used, n, Qx, Qy, P, nx, ny, rho, r, q };
}

/** The MI kernels' per-call constants. */
function miConstants(plan: Float32Array, R: number, a: MIAttrs) {
  const samples = plan[R + 1]!;
  return { samples, n: Math.max(samples, 1), eps2: f32(a.cosineEps * a.cosineEps), rhoMax: f32(1 - a.rhoEps) };
}

const miKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { attentions, positions, plan } = inputs as Record<'attentions' | 'positions' | 'plan', tf.TensorInfo>;
  const g = geometry(attentions);
  const S = positions.shape[1]!;
  const out = makeHostOutput(b, [g.R], 'float32');
  const a = hostF32(b, attentions);
  const pos = hostValues(b, positions) as Int32Array;
  const p = hostF32(b, plan);
  const mi = hostF32(b, out);
  const k = miConstants(p, g.R, attrs as unknown as MIAttrs);
  const cx = new Float64Array(S);
  const cy = new Float64Array(S);
  for (let row = 0; row < g.R; row++) {
    const used = p[row]! > 0 ? k.samples : 0;
    const st = rowStats(a, g, pos, S, row, used, k.n, k.eps2, k.rhoMax, cx, cy);
    mi[row] = f32(Math.log(st.q) * -0.5);
  }
  return out;
};

/** -mean(mi over kept rows) * scale, as a float32 number, and the kept rows. */
function meanMI(mi: Float32Array, plan: Float32Array, R: number): { ami: number; rows: number } {
  let part = 0;
  for (let r = 0; r < R; r++) part += f32(mi[r]! * plan[r]!);
  const rows = plan[R]!;
  return { ami: f32(-f32(f32(part) / Math.max(rows, 1)) * plan[R + 2]!), rows };
}

const valueKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { mi, plan } = inputs as Record<'mi' | 'plan', tf.TensorInfo>;
  const R = mi.shape[0]!;
  const out = makeHostOutput(b, [1], 'float32');
  const { ami, rows } = meanMI(hostF32(b, mi), hostF32(b, plan), R);
  hostF32(b, out)[0] = rows > 0 ? (Number.isNaN(ami) ? (attrs as unknown as MIAttrs).nanValue : ami) : 0;
  return out;
};

const gradKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { attentions, positions, plan, mi, dy } = inputs as Record<'attentions' | 'positions' | 'plan' | 'mi' | 'dy', tf.TensorInfo>;
  const g = geometry(attentions);
  const S = positions.shape[1]!;
  const out = makeHostOutput(b, attentions.shape, 'float32');
  const a = hostF32(b, attentions);
  const pos = hostValues(b, positions) as Int32Array;
  const p = hostF32(b, plan);
  const dx = hostF32(b, out);
  dx.fill(0); // a wasm output holds whatever the heap held
  const k = miConstants(p, g.R, attrs as unknown as MIAttrs);
  const { ami, rows } = meanMI(hostF32(b, mi), p, g.R);
  if (!(rows > 0) || Number.isNaN(ami)) return out; // no row kept, or the value is NaN (nanValue, a constant)
  const g0 = f32(f32(hostF32(b, dy)[0]! * -p[g.R + 2]!) / Math.max(rows, 1));
  const cx = new Float64Array(S);
  const cy = new Float64Array(S);
  for (let row = 0; row < g.R; row++) {
    if (!(p[row]! > 0)) continue;
    const st = rowStats(a, g, pos, S, row, k.samples, k.n, k.eps2, k.rhoMax, cx, cy);
    const dq = f32(f32(g0 * -0.5) / st.q);
    const drho = st.rho >= -k.rhoMax && st.rho <= k.rhoMax ? f32(f32(-2 * st.r) * dq) : 0;
    const den = f32(st.nx * st.ny);
    const dP = f32(drho / den);
    const dden = f32(f32(-drho * st.P) / f32(den * den));
    const dQx = st.Qx >= k.eps2 ? f32(f32(dden * st.ny) / f32(2 * st.nx)) : 0;
    const dQy = st.Qy >= k.eps2 ? f32(f32(dden * st.nx) / f32(2 * st.ny)) : 0;
    let scx = 0;
    let scy = 0;
    for (let s = 0; s < st.used; s++) {
      scx += f32(dP * cy[s]! + dQx * f32(2 * cx[s]!));
      scy += f32(dP * cx[s]! + dQy * f32(2 * cy[s]!));
    }
    const mcx = f32(f32(scx) / k.n);
    const mcy = f32(f32(scy) / k.n);
    for (let s = 0; s < st.used; s++) {
      const at = pos[row * S + s]!;
      const xi = flatOf(g.xRuns, g.TT, at);
      const yi = flatOf(g.yRuns, g.TT, at);
      dx[xi] = f32(f32(dP * cy[s]! + dQx * f32(2 * cx[s]!) - mcx) / a[xi]!);
      dx[yi] = f32(f32(dP * cx[s]! + dQy * f32(2 * cy[s]!) - mcy) / a[yi]!);
    }
  }
  return out;
};

const drawnKernel: tf.KernelFunc = ({ inputs, backend }) => {
  const b = backendOf(backend);
  const plan = inputs['plan']!;
  const R = plan.shape[0]! - 3;
  const out = makeHostOutput(b, [2], 'int32');
  const p = hostF32(b, plan);
  const d = hostValues(b, out) as Int32Array;
  d[0] = p[R]!;
  d[1] = p[R + 1]!;
  return out;
};

const KERNELS: Record<string, tf.KernelFunc> = {
  [COUNTS]: countsKernel, [PLAN]: planKernel, [DRAW]: drawKernel, [MI]: miKernel, [VALUE]: valueKernel,
  [GRAD]: gradKernel, [DRAWN]: drawnKernel,
};

/** Registers the AMI kernels of `backendName` if it is cpu or wasm. */
export function registerAmiHost(backendName: string): void {
  registerOp(backendName, { cpu: KERNELS, wasm: KERNELS });
}
