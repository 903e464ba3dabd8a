/**
 * A WGSL GEMM of our own for the training step's large products: C = op(A) op(B) (+ bias) (GELU) (+ residual), with
 * op(X) = X or X^T, A [M, K] (or [K, M] stored), B [K, N] (or [N, K] stored), C [M, N], all row-major float32.
 *
 * Why: TF.js's MatMulPackedProgram stages single-buffered tiles within 16 KB (32 x 32 outputs a workgroup, 32 x 64
 * as matmulTiles.ts retiles it) and loads scalars where B is transposed; BERT-base's products (M = 2 B T token rows,
 * K and N in {768, 2304, 3072}) want larger blocks, so that each value read from workgroup memory feeds more
 * multiply-adds, and two stages, so that the next slice's loads overlap the current one's arithmetic.
 *
 * The kernel (one workgroup per BM x BN block of C; WX x WY threads, each owning TM x TN = 4 RM x 4 RN outputs):
 *   - rows of a thread: rm * 4 WY + 4 ty + i, columns rn * 4 WX + 4 tx + j (rm < RM, rn < RN, i, j < 4), so that each
 *     thread reads its A and B fragments from workgroup memory as RM + RN vec4s per k;
 *   - workgroup memory holds two stages of A^T [BK][BM] and B [BK][BN] (vec4s): while the threads multiply out stage
 *     s, they hold the next BK-slice of A and B, read from global memory as vec4s along each operand's contiguous
 *     dimension, in registers, and store it into stage 1 - s afterwards: one barrier per BK-slice;
 *   - an operand whose contiguous dimension is K (A as stored [M, K], B as stored [N, K]) arrives as quads along k
 *     and is transposed on its way into workgroup memory: four scalar stores per quad, or, in the subgroup variant,
 *     a 4 x 4 transpose across four neighbouring lanes (three subgroupShuffleXor) and one vec4 store. The variant
 *     checks at run time, per subgroup, that lanes xor 1 and xor 2 are the invocations it expects, and takes the
 *     scalar stores where they are not (WebGPU does not promise which invocations make a subgroup);
 *   - every output sums its K products in order k = 0, 1, ... with fma, from 0, then the epilogue: + bias[n],
 *     GELU (the exact erf form of kernels/gelu, optionally also writing the value before it), + residual[m, n].
 * Any shape is right: rows, columns and k past the edges read as 0 and are not written. Where every contiguous
 * dimension (and N) is a multiple of 4, the buffers are bound as vec4 arrays ("vec4" form); otherwise each element
 * is read on its own ("scalar" form).
 *
 * Tiles per shape: GEMM_TILES, the largest block that still gives MIN_WORKGROUPS workgroups (a GPU with ~130
 * multiprocessors wants two waves of them), with BK = 16 where the device's workgroup memory holds it, else 8. The
 * table is a first guess, not yet timed on a GPU (bench/gemm.ts measures it).
 */
import { WGSL_ERF } from './erf.js';
import { tf } from '../../model/tf.js';
import { internalsOf, packUniforms, recordRaw, type RawProgram } from './webgpuPrograms.js';

/** A block shape: WX x WY threads, RM x RN vec4 groups of outputs each, BK-deep slices of K. */
export interface GemmTile {
  /** Threads across (columns) and down (rows). */
  wx: number;
  wy: number;
  /** vec4 groups of rows and of columns per thread (TM = 4 rm rows, TN = 4 rn columns). */
  rm: number;
  rn: number;
  /** Depth of a staged slice of K (a multiple of 4). */
  bk: number;
}

export interface GemmEpilogue {
  bias: boolean;
  gelu: boolean;
  /** With gelu: also write the value before it (what GELU's gradient reads). */
  keepPre: boolean;
  residual: boolean;
}

export interface GemmSpec {
  transA: boolean;
  transB: boolean;
  tile: GemmTile;
  /** vec4 form (see the module comment); scalar form otherwise. */
  vec4: boolean;
  /** The subgroup transpose of quads along k (needs the `subgroups` feature). */
  subgroups: boolean;
  epilogue: GemmEpilogue;
}

/** Output rows and columns of a workgroup. */
export const blockRows = (t: GemmTile): number => 4 * t.rm * t.wy;
export const blockCols = (t: GemmTile): number => 4 * t.rn * t.wx;

/** Bytes of workgroup memory a tile takes: two stages of a BK x BM and a BK x BN slice. */
export function gemmTileBytes(t: GemmTile): number {
  return 2 * 4 * t.bk * (blockRows(t) + blockCols(t));
}

/** The blocks, largest first; each at BK 16 and 8 (chooseGemmTile takes the deeper one that fits). */
export const GEMM_TILES: readonly GemmTile[] = [
  { wx: 16, wy: 16, rm: 2, rn: 2, bk: 16 }, // 128 x 128, 32 KB
  { wx: 16, wy: 16, rm: 2, rn: 2, bk: 8 }, // 128 x 128, 16 KB
  { wx: 16, wy: 16, rm: 2, rn: 1, bk: 16 }, // 128 x 64, 24 KB
  { wx: 16, wy: 16, rm: 2, rn: 1, bk: 8 }, // 128 x 64, 12 KB
  { wx: 16, wy: 16, rm: 1, rn: 1, bk: 16 }, // 64 x 64, 16 KB
  { wx: 16, wy: 16, rm: 1, rn: 1, bk: 8 }, // 64 x 64, 8 KB
];
/** Workgroups a product should have before a larger block is taken (two waves on a ~130-multiprocessor GPU). */
const MIN_WORKGROUPS = 256;

/** `128x128x16 (16x16 threads, 8x8 outputs each)` */
export function describeGemmTile(t: GemmTile): string {
  return `${blockRows(t)}x${blockCols(t)}x${t.bk} (${t.wx}x${t.wy} threads, ${4 * t.rm}x${4 * t.rn} outputs each)`;
}

/**
 * The tile of an M x N product on a device with `storageBytes` of workgroup memory: the largest block giving at least
 * MIN_WORKGROUPS workgroups (else the smallest block), at the deepest BK that fits; null if none fits.
 */
export function chooseGemmTile(M: number, N: number, storageBytes: number): GemmTile | null {
  const fitting = GEMM_TILES.filter((t) => gemmTileBytes(t) <= storageBytes);
  if (fitting.length === 0) return null;
  const workgroups = (t: GemmTile) => Math.ceil(M / blockRows(t)) * Math.ceil(N / blockCols(t));
  const smallest = fitting.at(-1)!;
  return fitting.find((t) => workgroups(t) >= MIN_WORKGROUPS) ??
    fitting.find((t) => blockRows(t) === blockRows(smallest) && blockCols(t) === blockCols(smallest))!;
}

/** Whether the product's operands and output allow the vec4 form (every contiguous dimension, and N, a multiple of 4). */
export function gemmVec4(M: number, N: number, K: number, transA: boolean, transB: boolean): boolean {
  return (transA ? M : K) % 4 === 0 && (transB ? K : N) % 4 === 0 && N % 4 === 0;
}

/** The cache key: one per distinct WGSL. */
export function gemmKey(s: GemmSpec): string {
  const t = s.tile;
  const e = s.epilogue;
  return `micseGemm_${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'}_${t.wx}x${t.wy}_${t.rm}x${t.rn}_${t.bk}_${s.vec4 ? 'v4' : 's'}` +
    `${s.subgroups ? '_sg' : ''}${e.bias ? '_bias' : ''}${e.gelu ? (e.keepPre ? '_gelupre' : '_gelu') : ''}${e.residual ? '_res' : ''}`;
}

/** How the staging code reads one operand's BK-slice. */
interface Staging {
  /** 'A' or 'B'. */
  name: string;
  /** Elements across the block (BM for A, BN for B). */
  span: number;
  /** Whether the stored operand is contiguous along k (A [M, K], B [N, K]); else along the block's side. */
  alongK: boolean;
  /** WGSL of the stored operand's row length (its contiguous extent). */
  rowLen: string;
  /** WGSL of the number of rows along the block's side (M or N). */
  sideLen: string;
}

function stagingOf(s: GemmSpec, name: 'A' | 'B'): Staging {
  return name === 'A'
    ? { name, span: blockRows(s.tile), alongK: !s.transA, rowLen: s.transA ? 'uniforms.M' : 'uniforms.K', sideLen: 'uniforms.M' }
    : { name, span: blockCols(s.tile), alongK: s.transB, rowLen: s.transB ? 'uniforms.K' : 'uniforms.N', sideLen: 'uniforms.N' };
}

/** Whether the operand's quads are transposed across lanes: along k, subgroups on, every thread holding the same number. */
function shufflesQuads(s: GemmSpec, o: Staging): boolean {
  return s.subgroups && o.alongK && ((o.span * s.tile.bk) / 4) % (s.tile.wx * s.tile.wy) === 0;
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`gemm: ${what}`);
}

/**
 * WGSL of `load<name>(k0)` (this thread's quads of the slice [k0, k0 + BK) into registers `r<name>`) and
 * `store<name>(stage)` (them into workgroup memory `s<name>` [stage][BK][span / 4] vec4s).
 */
function stagingWgsl(s: GemmSpec, o: Staging): string {
  const { bk } = s.tile;
  const threads = s.tile.wx * s.tile.wy;
  const quads = (o.span * bk) / 4;
  const perThread = Math.ceil(quads / threads);
  const whole = quads % threads === 0;
  const span4 = o.span / 4;
  const slice = bk * span4; // vec4s in one stage
  const side0 = o.name === 'A' ? 'm0' : 'n0';
  // Quad e of the slice: its side index and the k index of its first element (along k, four neighbouring quads hold
  // four neighbouring sides at one k-quad: side = 4 (e / BK) + e % 4, k = 4 ((e / 4) % (BK / 4))) ...
  const sideK = o.alongK
    ? `let side = 4u * (e / ${bk}u) + e % 4u;\n      let kk = 4u * ((e / 4u) % ${bk / 4}u);`
    : `let side = 4u * (e % ${span4}u);\n      let kk = e / ${span4}u;`;
  // ... and its first element's (row, column) in the stored operand.
  const place = `${sideK}\n      ${o.alongK ? `let row = ${side0} + side;\n      let col = k0 + kk;` : `let row = k0 + kk;\n      let col = ${side0} + side;`}`;
  const rowsLen = o.alongK ? o.sideLen : 'uniforms.K';
  const colsLen = o.rowLen;
  const read = s.vec4
    ? `if (row < ${rowsLen} && col < ${colsLen}) { v = ${o.name}[(row * ${colsLen} + col) / 4u]; }`
    : `for (var j = 0u; j < 4u; j = j + 1u) {
        if (row < ${rowsLen} && col + j < ${colsLen}) { v[j] = ${o.name}[row * ${colsLen} + col + j]; }
      }`;
  const load = `
  var<private> r${o.name} : array<vec4<f32>, ${perThread}>;
  fn load${o.name}(k0 : u32) {
    for (var q = 0u; q < ${perThread}u; q = q + 1u) {
      let e = localIndex + q * ${threads}u;
      ${whole ? '' : `if (e >= ${quads}u) { break; }`}
      ${place}
      var v = vec4<f32>(0.0);
      ${read}
      r${o.name}[q] = v;
    }
  }`;
  // Where quad e goes: along the side it is one vec4 at [kk][side / 4]; along k its element j goes to [kk + j][side / 4][side % 4].
  const storeDirect = `s${o.name}[base + kk * ${span4}u + side / 4u] = r${o.name}[q];`;
  const storeScalars = `for (var j = 0u; j < 4u; j = j + 1u) { s${o.name}[base + (kk + j) * ${span4}u + side / 4u][side % 4u] = r${o.name}[q][j]; }`;
  // Lanes e with the same e / 4 hold sides 4g + i (i = e % 4) at k = kk..kk + 3; after the exchange lane i holds
  // k = kk + i at sides 4g..4g + 3: one vec4 at [kk + i][g].
  const storeShuffled = `let v = r${o.name}[q];
        let i = e % 4u;
        var w = v;
        w[i ^ 1u] = subgroupShuffleXor(v[i ^ 1u], 1u);
        w[i ^ 2u] = subgroupShuffleXor(v[i ^ 2u], 2u);
        w[i ^ 3u] = subgroupShuffleXor(v[i ^ 3u], 3u);
        s${o.name}[base + (kk + i) * ${span4}u + side / 4u] = w;`;
  const shuffled = shufflesQuads(s, o);
  const store = `
  fn store${o.name}(stage : u32) {
    let base = stage * ${slice}u;
    for (var q = 0u; q < ${perThread}u; q = q + 1u) {
      let e = localIndex + q * ${threads}u;
      ${whole ? '' : `if (e >= ${quads}u) { break; }`}
      ${sideK}
      ${!o.alongK ? storeDirect : shuffled ? `if (lanesInOrder) {\n        ${storeShuffled}\n      } else {\n        ${storeScalars}\n      }` : storeScalars}
    }
  }`;
  return `
  var<workgroup> s${o.name} : array<vec4<f32>, ${2 * slice}>;${load}${store}`;
}

/** The WGSL module of `s` (bindings: A, B, [bias], [residual], C, [pre], uniforms). */
export function gemmWgsl(s: GemmSpec): string {
  const t = s.tile;
  const e = s.epilogue;
  check(t.bk % 4 === 0 && t.bk >= 4, `BK ${t.bk} is not a multiple of 4`);
  check(!e.keepPre || e.gelu, 'keepPre needs gelu');
  const BM = blockRows(t);
  const BN = blockCols(t);
  const elem = s.vec4 ? 'vec4<f32>' : 'f32';
  const inputs = ['A', 'B', ...(e.bias ? ['bias'] : []), ...(e.residual ? ['residual'] : [])];
  const outputs = ['C', ...(e.keepPre ? ['pre'] : [])];
  const bindings = [
    ...inputs.map((n, i) => `@group(0) @binding(${i}) var<storage, read> ${n} : array<${elem}>;`),
    ...outputs.map((n, i) => `@group(0) @binding(${inputs.length + i}) var<storage, read_write> ${n} : array<${elem}>;`),
    `@group(0) @binding(${inputs.length + outputs.length}) var<uniform> uniforms : Uniforms;`,
  ].join('\n');
  const stagingA = stagingWgsl(s, stagingOf(s, 'A'));
  const stagingB = stagingWgsl(s, stagingOf(s, 'B'));
  const fmas: string[] = [];
  for (let rm = 0; rm < t.rm; rm++) {
    for (let i = 0; i < 4; i++) {
      for (let rn = 0; rn < t.rn; rn++) {
        const a = (rm * 4 + i) * t.rn + rn;
        fmas.push(`acc[${a}] = fma(vec4<f32>(a${rm}[${i}]), b${rn}, acc[${a}]);`);
      }
    }
  }
  const fragments = [
    ...Array.from({ length: t.rm }, (_, rm) => `let a${rm} = sA[aBase + ${rm * t.wy}u];`),
    ...Array.from({ length: t.rn }, (_, rn) => `let b${rn} = sB[bBase + ${rn * t.wx}u];`),
  ];
  // Epilogue of one output element (scalar form) or vec4 of four (vec4 form): `v` in, written to C (and pre).
  const epilogue = (index: string, col: string) => [
    e.bias ? `v = v + bias[${col}];` : '',
    e.keepPre ? `pre[${index}] = v;` : '',
    e.gelu ? `v = 0.5 * v * (1.0 + ${s.vec4 ? 'erf4' : 'erf_as'}(v * ${Math.SQRT1_2}));` : '',
    e.residual ? `v = v + residual[${index}];` : '',
    `C[${index}] = v;`,
  ].filter((l) => l !== '').join('\n          ');
  const write = s.vec4
    ? `if (row < uniforms.M && col < uniforms.N) {
          var v = acc[(rm * 4u + i) * ${t.rn}u + rn];
          ${epilogue('(row * uniforms.N + col) / 4u', 'col / 4u')}
        }`
    : `for (var j = 0u; j < 4u; j = j + 1u) {
          if (row < uniforms.M && col + j < uniforms.N) {
            var v = acc[(rm * 4u + i) * ${t.rn}u + rn][j];
            ${epilogue('row * uniforms.N + col + j', 'col + j')}
          }
        }`;
  const shuffles = shufflesQuads(s, stagingOf(s, 'A')) || shufflesQuads(s, stagingOf(s, 'B'));
  return `${s.subgroups ? 'enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n' : ''}
struct Uniforms { M : u32, N : u32, K : u32, };
${bindings}
var<private> localIndex : u32;
var<private> m0 : u32;
var<private> n0 : u32;
${shuffles ? 'var<private> lanesInOrder : bool;' : ''}
${e.gelu ? WGSL_ERF : ''}
${e.gelu && s.vec4 ? 'fn erf4(v : vec4<f32>) -> vec4<f32> { return vec4<f32>(erf_as(v.x), erf_as(v.y), erf_as(v.z), erf_as(v.w)); }' : ''}
${stagingA}
${stagingB}
@compute @workgroup_size(${t.wx}, ${t.wy}, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>,
        @builtin(local_invocation_index) lindex : u32) {
  localIndex = lindex;
  m0 = wid.y * ${BM}u;
  n0 = wid.x * ${BN}u;
  ${shuffles ? `// The shuffled transpose needs the lanes xor 1, 2 (so xor 3) to be the local indices xor 1, 2 (and 3).
  lanesInOrder = subgroupAll(subgroupShuffleXor(lindex, 1u) == (lindex ^ 1u) && subgroupShuffleXor(lindex, 2u) == (lindex ^ 2u));` : ''}
  let tx = lid.x;
  let ty = lid.y;
  var acc : array<vec4<f32>, ${t.rm * 4 * t.rn}>;
  let tiles = (uniforms.K + ${t.bk - 1}u) / ${t.bk}u;
  loadA(0u);
  loadB(0u);
  storeA(0u);
  storeB(0u);
  workgroupBarrier();
  for (var tile = 0u; tile < tiles; tile = tile + 1u) {
    let stage = tile % 2u;
    let more = tile + 1u < tiles;
    if (more) {
      loadA((tile + 1u) * ${t.bk}u);
      loadB((tile + 1u) * ${t.bk}u);
    }
    for (var k = 0u; k < ${t.bk}u; k = k + 1u) {
      let aBase = (stage * ${t.bk}u + k) * ${BM / 4}u + ty;
      let bBase = (stage * ${t.bk}u + k) * ${BN / 4}u + tx;
      ${fragments.join('\n      ')}
      ${fmas.join('\n      ')}
    }
    if (more) {
      storeA(1u - stage);
      storeB(1u - stage);
    }
    workgroupBarrier();
  }
  for (var rm = 0u; rm < ${t.rm}u; rm = rm + 1u) {
    for (var i = 0u; i < 4u; i = i + 1u) {
      let row = m0 + rm * ${4 * t.wy}u + 4u * ty + i;
      for (var rn = 0u; rn < ${t.rn}u; rn = rn + 1u) {
        let col = n0 + rn * ${4 * t.wx}u + 4u * tx;
        ${write}
      }
    }
  }
}
`;
}

/** The raw program of `s` (webgpuPrograms.ts recordRaw). */
export function gemmProgram(s: GemmSpec): RawProgram {
  return { key: gemmKey(s), code: () => gemmWgsl(s) };
}

export interface GemmOptions {
  transA: boolean;
  transB: boolean;
  /** [N] */
  bias?: tf.TensorInfo;
  /** [M, N] */
  residual?: tf.TensorInfo;
  gelu?: boolean;
  /** With gelu: also return the value before it. */
  keepPre?: boolean;
  /** The block; chooseGemmTile's when absent. */
  tile?: GemmTile;
  /** Use the subgroup variant where the device has `subgroups` (default true). */
  subgroups?: boolean;
}

/** M, N, K of op(a) op(b) for 2-D a and b; an error naming the shapes when they do not multiply. */
export function gemmDims(a: number[], b: number[], transA: boolean, transB: boolean): [number, number, number] {
  check(a.length === 2 && b.length === 2, `2-D operands only; got [${a}] and [${b}]`);
  const [M, K] = transA ? [a[1]!, a[0]!] : [a[0]!, a[1]!];
  const [Kb, N] = transB ? [b[1]!, b[0]!] : [b[0]!, b[1]!];
  check(K === Kb, `inner sizes differ: [${a}]${transA ? '^T' : ''} x [${b}]${transB ? '^T' : ''}`);
  return [M, N, K];
}

/** Whether `backend`'s device can run this GEMM with subgroups. */
export function deviceHasSubgroups(backend: unknown): boolean {
  return internalsOf(backend).device.features.has('subgroups');
}

/**
 * One dispatch: op(a) op(b) with the epilogue of `o` into a new [M, N] tensor (and, with keepPre, the value before
 * GELU second). `backend` is a WebGPUBackend.
 */
export function runGemm(backend: unknown, a: tf.TensorInfo, b: tf.TensorInfo, o: GemmOptions): tf.TensorInfo[] {
  const [M, N, K] = gemmDims(a.shape, b.shape, o.transA, o.transB);
  const device = internalsOf(backend).device;
  const tile = o.tile ?? chooseGemmTile(M, N, device.limits.maxComputeWorkgroupStorageSize);
  check(tile !== null, `no tile fits this device's ${device.limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory`);
  check(gemmTileBytes(tile!) <= device.limits.maxComputeWorkgroupStorageSize,
    `tile ${describeGemmTile(tile!)} needs ${gemmTileBytes(tile!)} bytes of workgroup memory; this device has ${device.limits.maxComputeWorkgroupStorageSize}`);
  if (o.bias !== undefined) check(o.bias.shape.length === 1 && o.bias.shape[0] === N, `bias [${o.bias.shape}] is not [${N}]`);
  if (o.residual !== undefined) check(tf.util.arraysEqual(o.residual.shape, [M, N]), `residual [${o.residual.shape}] is not [${M}, ${N}]`);
  const gelu = o.gelu === true;
  const keepPre = o.keepPre === true;
  check(!keepPre || gelu, 'keepPre needs gelu');
  const spec: GemmSpec = {
    transA: o.transA,
    transB: o.transB,
    tile: tile!,
    vec4: gemmVec4(M, N, K, o.transA, o.transB),
    subgroups: (o.subgroups ?? true) && device.features.has('subgroups'),
    epilogue: { bias: o.bias !== undefined, gelu, keepPre, residual: o.residual !== undefined },
  };
  const inputs = [a, b, ...(o.bias !== undefined ? [o.bias] : []), ...(o.residual !== undefined ? [o.residual] : [])];
  const grid: [number, number, number] = [Math.ceil(N / blockCols(tile!)), Math.ceil(M / blockRows(tile!)), 1];
  const uniforms = packUniforms([{ type: 'uint32', data: [M] }, { type: 'uint32', data: [N] }, { type: 'uint32', data: [K] }]);
  return recordRaw(backend, gemmProgram(spec), inputs, keepPre ? [[M, N], [M, N]] : [[M, N]], grid, uniforms);
}
