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
 * bin up are placed bin by bin from the top in increasing index order (a counting sort on the top 8 bits), each bin's
 * few keys then put in descending order by an insertion sort that moves a key only past smaller ones, so equal keys
 * keep increasing index order; the invalid positions follow in increasing index order.
 * The per-row MI, the value and the gradient follow the composed ops' arithmetic (logs and quotients rounded to
 * float32 as the cpu backend rounds each op's output, sums accumulated in float64 as its Sum does), with the gradient
 * of webgpu.ts's module comment. The MI kernel (MicseAmiMIStats) keeps each row's statistics, float32 numbers all,
 * and the gradient reads them (the logs are not taken twice).
 */
import { tf } from '../../model/tf.js';
import { hostF32, hostValues, makeHostOutput, type HostBackend } from '../platform/hostBackend.js';
import { registerOp } from '../registry.js';
import { seedKeys } from '../dropout/index.js';
import { AMI_STATS_HEAD, COUNTS, dims, DRAW, DRAWN, GRAD_STATS, MI_STATS, PLAN, VALUE, type DrawAttrs, type MIAttrs, type PlanAttrs } from './index.js';

/** Bits of a draw key (seededUniform's 24 random bits). */
const KEY_BITS = 24;
/** Bits of the histogram bin: 8. */
const BIN_BITS = 8;
const BINS = 1 << BIN_BITS;
/** The histogram bin of a key: its top 8 bits. */
const BIN_SHIFT = KEY_BITS - BIN_BITS;

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
  for (let r = 0; r < g.R; r++) counts[r] = validOfRow(a, g, r);
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
 * The draw key of flat index `i` (dropout/index.ts uniformBitsAt) in int32 arithmetic: the same 24-bit integer.
 */
function drawKey(i: number, k1: number, k2: number): number {
  let x = i ^ k1;
  x ^= x >>> 16;
  x = Math.imul(x, MIX_MUL_1);
  x ^= x >>> 15;
  x = Math.imul(x, MIX_MUL_2);
  x ^= x >>> 16;
  x ^= k2;
  x ^= x >>> 16;
  x = Math.imul(x, MIX_MUL_1);
  x ^= x >>> 15;
  x = Math.imul(x, MIX_MUL_2);
  x ^= x >>> 16;
  return x >>> 8;
}
/** lowbias32's multipliers (dropout/index.ts mix32), as int32. */
const MIX_MUL_1 = 0x7feb352d;
const MIX_MUL_2 = 0x846ca68b | 0;

/** A row's valid positions for the draw: their columns and keys in increasing column order, and the keys' histogram. */
interface RowKeys {
  cols: Int32Array;
  keys: Int32Array;
  /** Valid keys per top-8-bit bin. */
  hist: Int32Array;
}

/**
 * The draw into `result [R, S]` (rankSamplePositions): `keysOfRow(r, k1, k2, into)` fills `into` with row r's valid
 * positions (cols, keys by drawKey at flat index r*N + c, hist) and returns their count; `invalidOfRow(r, out, at,
 * S)` writes row r's invalid positions in increasing order to out[at..] until S ranks are filled. Keys and order as
 * the module comment.
 */
function drawRows(R: number, N: number, S: number, seed: number, keysOfRow: (r: number, k1: number, k2: number, into: RowKeys) => number,
  invalidOfRow: (r: number, out: Int32Array, at: number, end: number) => void, result: Int32Array): void {
  const [k1, k2] = seedKeys(seed);
  const row: RowKeys = { cols: new Int32Array(N), keys: new Int32Array(N), hist: new Int32Array(BINS) };
  const start = new Int32Array(BINS);
  const sortedKeys = new Int32Array(N);
  const sortedCols = new Int32Array(N);
  for (let r = 0; r < R; r++) {
    row.hist.fill(0);
    const valid = keysOfRow(r, k1 | 0, k2 | 0, row);
    const { cols, keys, hist } = row;
    const take = Math.min(S, valid);
    // The bins from the top down to the one holding the take-th largest key; each bin's first place in the ranking.
    let lowBin = BINS;
    for (let m = 0; lowBin > 0 && m < take;) {
      lowBin--;
      start[lowBin] = m;
      m += hist[lowBin]!;
    }
    for (let e = 0; e < valid; e++) {
      const key = keys[e]!;
      const bin = key >>> BIN_SHIFT;
      if (bin < lowBin) continue;
      const at = start[bin]!++;
      sortedKeys[at] = key;
      sortedCols[at] = cols[e]!;
    }
    for (let bin = BINS - 1, first = 0; bin >= lowBin; bin--) {
      const end = first + hist[bin]!;
      for (let i = first + 1; i < end; i++) {
        const key = sortedKeys[i]!;
        const col = sortedCols[i]!;
        let j = i - 1;
        for (; j >= first && sortedKeys[j]! < key; j--) {
          sortedKeys[j + 1] = sortedKeys[j]!;
          sortedCols[j + 1] = sortedCols[j]!;
        }
        sortedKeys[j + 1] = key;
        sortedCols[j + 1] = col;
      }
      first = end;
    }
    const at = r * S;
    result.set(sortedCols.subarray(0, take), at);
    // Ranks take..S-1: the invalid positions (key -1) in increasing index order.
    if (take < S) invalidOfRow(r, result, at + take, at + S);
  }
}

/** Both views of a row of `attentions` > 0 at the elements x and y (a column's): a valid entry. */
const isValid = (a: Float32Array, x: number, y: number): boolean => a[x]! > 0 && a[y]! > 0;

/** The valid entries of row r (isValid at each column). */
function validOfRow(a: Float32Array, g: Geometry, r: number): number {
  rowRuns(r, 0, g.L, g.H, g.TT, g.xRuns);
  rowRuns(r, 1, g.L, g.H, g.TT, g.yRuns);
  const TT = g.TT;
  let n = 0;
  for (let j = 0; j < g.L / 2; j++) {
    const x0 = g.xRuns[j]!;
    const y0 = g.yRuns[j]!;
    for (let e = 0; e < TT; e++) n += isValid(a, x0 + e, y0 + e) ? 1 : 0;
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
    const TT = g.TT;
    drawRows(g.R, g.N, samples, seed, (r, k1, k2, { cols, keys, hist }) => {
      rowRuns(r, 0, g.L, g.H, TT, g.xRuns);
      rowRuns(r, 1, g.L, g.H, TT, g.yRuns);
      let valid = 0;
      for (let j = 0; j < g.L / 2; j++) {
        const [x0, y0, c0] = [g.xRuns[j]!, g.yRuns[j]!, j * TT];
        for (let e = 0; e < TT; e++) {
          if (!isValid(a, x0 + e, y0 + e)) continue;
          const key = drawKey(r * g.N + c0 + e, k1, k2);
          cols[valid] = c0 + e;
          keys[valid] = key;
          hist[key >>> BIN_SHIFT]!++;
          valid++;
        }
      }
      return valid;
    }, (r, result, at, end) => {
      rowRuns(r, 0, g.L, g.H, TT, g.xRuns);
      rowRuns(r, 1, g.L, g.H, TT, g.yRuns);
      for (let c = 0; c < g.N && at < end; c++) if (!isValid(a, flatOf(g.xRuns, TT, c), flatOf(g.yRuns, TT, c))) result[at++] = c;
    }, hostValues(b, out) as Int32Array);
    return out;
  }
  const validT = inputs['valid']!;
  const [R, N] = validT.shape as [number, number];
  const out = makeHostOutput(b, [R, samples], 'int32');
  const valid = hostValues(b, validT);
  drawRows(R, N, samples, seed, (r, k1, k2, { cols, keys, hist }) => {
    let n = 0;
    for (let c = 0; c < N; c++) {
      if (valid[r * N + c] === 0) continue;
      const key = drawKey(r * N + c, k1, k2);
      cols[n] = c;
      keys[n] = key;
      hist[key >>> BIN_SHIFT]!++;
      n++;
    }
    return n;
  }, (r, result, at, end) => {
    for (let c = 0; c < N && at < end; c++) if (valid[r * N + c] === 0) result[at++] = c;
  }, hostValues(b, out) as Int32Array);
  return out;
};

/**
 * One row's Gaussian MI statistics over its drawn samples (the composed ops' gaussianMI), written into `st`
 * ([AMI_STATS_HEAD + 2S]): the sums of squares and products Qx, Qy, P, the norms nx, ny, rho, its clamp r and q =
 * (1 - r)(1 + r), then the centred logs cx and cy of the first `used` samples.
 */
function rowStats(a: Float32Array, g: Geometry, positions: Int32Array, S: number, row: number, used: number,
  n: number, eps2: number, rhoMax: number, st: Float32Array): void {
  rowRuns(row, 0, g.L, g.H, g.TT, g.xRuns);
  rowRuns(row, 1, g.L, g.H, g.TT, g.yRuns);
  const cx = AMI_STATS_HEAD;
  const cy = AMI_STATS_HEAD + S;
  // The samples' values first (loads that do not wait on one another: the row's cache misses overlap), then their logs.
  for (let s = 0; s < used; s++) {
    const p = positions[row * S + s]!;
    st[cx + s] = a[flatOf(g.xRuns, g.TT, p)]!;
    st[cy + s] = a[flatOf(g.yRuns, g.TT, p)]!;
  }
  let sx = 0;
  let sy = 0;
  for (let s = 0; s < used; s++) {
    st[cx + s] = f32(Math.log(st[cx + s]!));
    st[cy + s] = f32(Math.log(st[cy + s]!));
    sx += st[cx + s]!;
    sy += st[cy + s]!;
  }
  const mx = f32(f32(sx) / n);
  const my = f32(f32(sy) / n);
  let Qx = 0;
  let Qy = 0;
  let P = 0;
  for (let s = 0; s < used; s++) {
    const x = f32(st[cx + s]! - mx);
    const y = f32(st[cy + s]! - my);
    st[cx + s] = x;
    st[cy + s] = y;
    Qx += f32(x * x);
    Qy += f32(y * y);
    P += f32(x * y);
  }
  Qx = f32(Qx);
  Qy = f32(Qy);
  P = f32(P);
  const nx = f32(Math.sqrt(Math.max(Qx, eps2)));
  const ny = f32(Math.sqrt(Math.max(Qy, eps2)));
  const rho = f32(P / f32(nx * ny));
  const r = Number.isNaN(rho) ? rho : Math.min(Math.max(rho, -rhoMax), rhoMax);
  const q = f32(f32(1 - r) * f32(1 + r));
  st.set([Qx, Qy, P, nx, ny, rho, r, q]);
}

/** The MI kernels' per-call constants. */
function miConstants(plan: Float32Array, R: number, a: MIAttrs) {
  const samples = plan[R + 1]!;
  return { samples, n: Math.max(samples, 1), eps2: f32(a.cosineEps * a.cosineEps), rhoMax: f32(1 - a.rhoEps) };
}

/** MI_STATS: the per-row MI [R] and the rows' statistics [R, AMI_STATS_HEAD + 2S] (rowStats). */
const miKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { attentions, positions, plan } = inputs as Record<'attentions' | 'positions' | 'plan', tf.TensorInfo>;
  const g = geometry(attentions);
  const S = positions.shape[1]!;
  const W = AMI_STATS_HEAD + 2 * S;
  const out = makeHostOutput(b, [g.R], 'float32');
  const statsOut = makeHostOutput(b, [g.R, W], 'float32');
  const a = hostF32(b, attentions);
  const pos = hostValues(b, positions) as Int32Array;
  const p = hostF32(b, plan);
  const mi = hostF32(b, out);
  const stats = hostF32(b, statsOut);
  const k = miConstants(p, g.R, attrs as unknown as MIAttrs);
  for (let row = 0; row < g.R; row++) {
    const used = p[row]! > 0 ? k.samples : 0;
    const st = stats.subarray(row * W, (row + 1) * W);
    st.fill(0, AMI_STATS_HEAD + used, AMI_STATS_HEAD + S); // every element written: the samples a row does not use
    st.fill(0, AMI_STATS_HEAD + S + used);
    rowStats(a, g, pos, S, row, used, k.n, k.eps2, k.rhoMax, st);
    mi[row] = f32(Math.log(st[7]!) * -0.5);
  }
  return [out, statsOut];
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

/** GRAD_STATS: d(value)/d(attentions) for dy, from MI_STATS's statistics. */
const gradKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backendOf(backend);
  const { attentions, positions, plan, mi, stats: statsT, dy } = inputs as Record<'attentions' | 'positions' | 'plan' | 'mi' | 'stats' | 'dy', tf.TensorInfo>;
  const g = geometry(attentions);
  const S = positions.shape[1]!;
  const W = AMI_STATS_HEAD + 2 * S;
  const out = makeHostOutput(b, attentions.shape, 'float32');
  const a = hostF32(b, attentions);
  const pos = hostValues(b, positions) as Int32Array;
  const p = hostF32(b, plan);
  const stats = hostF32(b, statsT);
  const dx = hostF32(b, out);
  dx.fill(0); // a wasm output holds whatever the heap held
  const k = miConstants(p, g.R, attrs as unknown as MIAttrs);
  const { ami, rows } = meanMI(hostF32(b, mi), p, g.R);
  if (!(rows > 0) || Number.isNaN(ami)) return out; // no row kept, or the value is NaN (nanValue, a constant)
  const g0 = f32(f32(hostF32(b, dy)[0]! * -p[g.R + 2]!) / Math.max(rows, 1));
  for (let row = 0; row < g.R; row++) {
    if (!(p[row]! > 0)) continue;
    const st = row * W;
    const [Qx, Qy, P, nx, ny, rho, r, q] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => stats[st + i]!) as
      [number, number, number, number, number, number, number, number]; // rowStats's order
    const cx = st + AMI_STATS_HEAD;
    const cy = cx + S;
    rowRuns(row, 0, g.L, g.H, g.TT, g.xRuns);
    rowRuns(row, 1, g.L, g.H, g.TT, g.yRuns);
    const dq = f32(f32(g0 * -0.5) / q);
    const drho = rho >= -k.rhoMax && rho <= k.rhoMax ? f32(f32(-2 * r) * dq) : 0;
    const den = f32(nx * ny);
    const dP = f32(drho / den);
    const dden = f32(f32(-drho * P) / f32(den * den));
    const dQx = Qx >= k.eps2 ? f32(f32(dden * ny) / f32(2 * nx)) : 0;
    const dQy = Qy >= k.eps2 ? f32(f32(dden * nx) / f32(2 * ny)) : 0;
    const used = k.samples;
    let scx = 0;
    let scy = 0;
    for (let s = 0; s < used; s++) {
      scx += f32(dP * stats[cy + s]! + dQx * f32(2 * stats[cx + s]!));
      scy += f32(dP * stats[cx + s]! + dQy * f32(2 * stats[cy + s]!));
    }
    const mcx = f32(f32(scx) / k.n);
    const mcy = f32(f32(scy) / k.n);
    for (let s = 0; s < used; s++) {
      const at = pos[row * S + s]!;
      const xi = flatOf(g.xRuns, g.TT, at);
      const yi = flatOf(g.yRuns, g.TT, at);
      dx[xi] = f32(f32(dP * stats[cy + s]! + dQx * f32(2 * stats[cx + s]!) - mcx) / a[xi]!);
      dx[yi] = f32(f32(dP * stats[cx + s]! + dQy * f32(2 * stats[cy + s]!) - mcy) / a[yi]!);
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
  [COUNTS]: countsKernel, [PLAN]: planKernel, [DRAW]: drawKernel, [MI_STATS]: miKernel, [VALUE]: valueKernel,
  [GRAD_STATS]: gradKernel, [DRAWN]: drawnKernel,
};

/** Registers the AMI kernels of `backendName` if it is cpu or wasm. */
export function registerAmiHost(backendName: string): void {
  registerOp(backendName, { cpu: KERNELS, wasm: KERNELS });
}
