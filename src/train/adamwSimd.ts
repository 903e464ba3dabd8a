/**
 * The wasm backend's AdamW loops as WebAssembly SIMD (f32x4), operating in place on the tfjs-backend-wasm heap:
 * a JavaScript loop is scalar (~10 ns an element, slower than the stock kernels' SIMD passes it replaces), this one
 * runs four lanes an instruction. The module is assembled here from named opcodes (no toolchain) and instantiated
 * once per heap, importing the backend's own WebAssembly.Memory.
 *
 *   adamw(p, g, m, v, pOut, mOut, vOut: byte offsets, groups: i32, coef, b1, 1-b1, b2, 1-b2, decay, bc2Sqrt, eps, stepSize: f32)
 *     the update of adamwKernels.ts over `groups` x 4 elements; every f32x4 op rounds as the scalar float32 op
 *     does, so results equal the host loop's (and the stock cpu kernels') bit for bit.
 *   sumsq(g: byte offset, groups: i32) -> f64
 *     sum of the float32 squares of groups x 4 elements, accumulated in double in 4 lanes.
 * The caller handles the last n % 4 elements.
 */

/** WebAssembly value types. */
const I32 = 0x7f;
const F32 = 0x7d;
const F64 = 0x7c;
const V128 = 0x7b;

/** Core opcodes used below. */
const OP = {
  block: 0x02, loop: 0x03, br: 0x0c, brIf: 0x0d, end: 0x0b, emptyType: 0x40,
  localGet: 0x20, localSet: 0x21, localTee: 0x22,
  i32Const: 0x41, i32GeU: 0x4f, i32Add: 0x6a, i32Shl: 0x74, f64Add: 0xa0,
} as const;

/** SIMD opcodes (0xfd prefix, then the LEB128 number). */
const SIMD = {
  load: 0x00, store: 0x0b, shuffle: 0x0d, f32x4Splat: 0x13, f64x2ExtractLane: 0x21, f64x2PromoteLow: 0x5f,
  f32x4Sqrt: 0xe3, f32x4Add: 0xe4, f32x4Sub: 0xe5, f32x4Mul: 0xe6, f32x4Div: 0xe7, f64x2Add: 0xf0,
} as const;

/** log2 of the alignment the loads and stores promise (float32 arrays: 4 bytes). */
const ALIGN_LOG2 = 2;
const LANE_BYTES = 16;
const LANE_BYTES_LOG2 = 4;
/** Bytes 8..15 then 0..7: swaps a vector's halves, so promote_low reaches lanes 2 and 3. */
const SWAP_HALVES = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const simd = (op: number): number[] => [0xfd, ...uleb(op)];
const get = (i: number): number[] => [OP.localGet, ...uleb(i)];
const set = (i: number): number[] => [OP.localSet, ...uleb(i)];
const load = (): number[] => [...simd(SIMD.load), ALIGN_LOG2, 0];
const store = (): number[] => [...simd(SIMD.store), ALIGN_LOG2, 0];
/** The address `base + i` on the stack. */
const at = (base: number, i: number): number[] => [...get(base), ...get(i), OP.i32Add];
const vec = (items: number[]): number[] => [...uleb(items.length), ...items];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const name = (s: string): number[] => vec([...new TextEncoder().encode(s)]);
/** A function's local declarations: runs of (count, type). */
const localDecls = (runs: [number, number][]): number[] => [...uleb(runs.length), ...runs.flatMap(([n, t]) => [...uleb(n), t])];

/**
 * `for (i = 0; i < end; i += 16) body`, with i and end i32 locals (end = groups << 4 set first from `groups`).
 */
function loop16(i: number, end: number, groups: number, body: number[]): number[] {
  return [
    ...get(groups), OP.i32Const, ...sleb(LANE_BYTES_LOG2), OP.i32Shl, ...set(end),
    OP.block, OP.emptyType, OP.loop, OP.emptyType,
    ...get(i), ...get(end), OP.i32GeU, OP.brIf, 1,
    ...body,
    ...get(i), OP.i32Const, ...sleb(LANE_BYTES), OP.i32Add, ...set(i),
    OP.br, 0, OP.end, OP.end,
  ];
}

function adamwBody(): number[] {
  // params: 0 p, 1 g, 2 m, 3 v, 4 pOut, 5 mOut, 6 vOut, 7 groups (i32); 8 coef .. 16 stepSize (f32)
  const [p, g, m, v, pOut, mOut, vOut, groups] = [0, 1, 2, 3, 4, 5, 6, 7];
  const FIRST_SCALAR = 8;
  const SCALARS = 9;
  // locals: 17 i, 18 end (i32); 19..27 the scalars splatted; 28 gi, 29 mi, 30 vi (v128)
  const [i, end] = [17, 18];
  const splat = (k: number): number => 19 + k;
  const [coef, b1, o1, b2, o2, decay, bc2, eps, step] = Array.from({ length: SCALARS }, (_, k) => splat(k));
  const [gi, mi, vi] = [28, 29, 30];
  const mul = simd(SIMD.f32x4Mul);
  const add = simd(SIMD.f32x4Add);
  const body = [
    ...at(g, i), ...load(), ...get(coef!), ...mul, ...set(gi),
    ...at(m, i), ...load(), ...get(b1!), ...mul, ...get(gi), ...get(o1!), ...mul, ...add, ...set(mi),
    ...at(v, i), ...load(), ...get(b2!), ...mul, ...get(gi), ...get(gi), ...mul, ...get(o2!), ...mul, ...add, ...set(vi),
    ...at(mOut, i), ...get(mi), ...store(),
    ...at(vOut, i), ...get(vi), ...store(),
    ...at(pOut, i),
    ...at(p, i), ...load(), ...get(decay!), ...mul,
    ...get(mi), ...get(vi), ...simd(SIMD.f32x4Sqrt), ...get(bc2!), ...simd(SIMD.f32x4Div), ...get(eps!), ...add,
    ...simd(SIMD.f32x4Div), ...get(step!), ...mul,
    ...simd(SIMD.f32x4Sub), ...store(),
  ];
  const splats = Array.from({ length: SCALARS }, (_, k) => [...get(FIRST_SCALAR + k), ...simd(SIMD.f32x4Splat), ...set(splat(k))]).flat();
  const locals = localDecls([[2, I32], [12, V128]]);
  return [...locals, ...splats, ...loop16(i, end, groups, body), OP.end];
}

function sumsqBody(): number[] {
  // params: 0 g, 1 groups (i32); locals: 2 i, 3 end (i32); 4 acc01, 5 acc23, 6 sq (v128)
  const [g, groups, i, end, acc01, acc23, sq] = [0, 1, 2, 3, 4, 5, 6];
  const promote = simd(SIMD.f64x2PromoteLow);
  const f64Add = simd(SIMD.f64x2Add);
  const body = [
    ...at(g, i), ...load(), OP.localTee, ...uleb(sq), ...get(sq), ...simd(SIMD.f32x4Mul), ...set(sq),
    ...get(acc01), ...get(sq), ...promote, ...f64Add, ...set(acc01),
    ...get(acc23), ...get(sq), ...get(sq), ...simd(SIMD.shuffle), ...SWAP_HALVES, ...promote, ...f64Add, ...set(acc23),
  ];
  const lane = (acc: number, k: number): number[] => [...get(acc), ...simd(SIMD.f64x2ExtractLane), k];
  const locals = localDecls([[2, I32], [3, V128]]);
  return [
    ...locals, ...loop16(i, end, groups, body),
    ...lane(acc01, 0), ...lane(acc01, 1), OP.f64Add, ...lane(acc23, 0), ...lane(acc23, 1), OP.f64Add, OP.f64Add, OP.end,
  ];
}

function moduleBytes(): Uint8Array<ArrayBuffer> {
  const FUNC_TYPE = 0x60;
  const adamwType = [FUNC_TYPE, ...vec([...Array<number>(8).fill(I32), ...Array<number>(9).fill(F32)]), ...vec([])];
  const sumsqType = [FUNC_TYPE, ...vec([I32, I32]), ...vec([F64])];
  const MEMORY_IMPORT = 0x02;
  const LIMITS_MIN_ONLY = 0x00;
  const FUNC_EXPORT = 0x00;
  const body = (b: number[]): number[] => [...uleb(b.length), ...b];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, [...uleb(2), ...adamwType, ...sumsqType]),
    ...section(2, [...uleb(1), ...name('env'), ...name('memory'), MEMORY_IMPORT, LIMITS_MIN_ONLY, 0]),
    ...section(3, vec([0, 1])),
    ...section(7, [...uleb(2), ...name('adamw'), FUNC_EXPORT, 0, ...name('sumsq'), FUNC_EXPORT, 1]),
    ...section(10, [...uleb(2), ...body(adamwBody()), ...body(sumsqBody())]),
  ]);
}

export interface AdamWSimd {
  adamw(p: number, g: number, m: number, v: number, pOut: number, mOut: number, vOut: number, groups: number,
    coef: number, b1: number, oneMinusB1: number, b2: number, oneMinusB2: number, decay: number, bc2Sqrt: number, eps: number, stepSize: number): void;
  sumsq(g: number, groups: number): number;
}

/** Elements per SIMD group. */
export const SIMD_LANES = 4;

let compiled: WebAssembly.Module | null | undefined;
const instances = new WeakMap<WebAssembly.Memory, AdamWSimd>();

/**
 * The SIMD loops bound to `memory`, or null where this runtime has no wasm SIMD or the memory is shared (the
 * threaded wasm build), in which case the caller keeps the JavaScript loops.
 */
export function simdFor(memory: WebAssembly.Memory): AdamWSimd | null {
  if (compiled === undefined) {
    const bytes = moduleBytes();
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  if (compiled === null || memory.buffer instanceof SharedArrayBuffer) return null;
  let inst = instances.get(memory);
  if (inst === undefined) {
    inst = new WebAssembly.Instance(compiled, { env: { memory } }).exports as unknown as AdamWSimd;
    instances.set(memory, inst);
  }
  return inst;
}
