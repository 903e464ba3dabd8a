/**
 * A small WebAssembly assembler: named opcodes, expression helpers, a module encoder and a per-memory instance
 * cache, so SIMD kernels can be written in TypeScript and compiled at run time with no toolchain
 * (src/kernels/platform/hostSimd.ts and src/kernels/adamw/simd.ts use it).
 *
 * Code is `number[]` (bytes); expressions leave their value on the operand stack, e.g.
 *   f32x4.add(get(a), f32x4.mul(get(b), f32x4Const(2)))
 * Modules import one memory as `env.memory` (the tfjs-backend-wasm heap, or a private one) and export functions; a
 * shared memory (the threaded tfjs-backend-wasm build's) needs a module that declares its import shared.
 */

import { isShared, simdThreads, type SimdThreads } from './simdThreads.js';

export type Code = number[];

/** Value types. */
export const I32 = 0x7f;
export const F32 = 0x7d;
export const F64 = 0x7c;
export const V128 = 0x7b;
export type ValType = typeof I32 | typeof F32 | typeof F64 | typeof V128;

/** Core opcodes used by the kernels. */
const OP = {
  block: 0x02, loop: 0x03, br: 0x0c, brIf: 0x0d, end: 0x0b, emptyType: 0x40,
  localGet: 0x20, localSet: 0x21, localTee: 0x22,
  i32Const: 0x41, f32Const: 0x43,
  i32Load: 0x28, f64Store: 0x39, i32GeU: 0x4f, i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c, i32And: 0x71, i32ShrU: 0x76,
  f32Sqrt: 0x91, f32Add: 0x92, f32Mul: 0x94, f32Div: 0x95, f32Max: 0x97, f32ConvertI32S: 0xb2,
  f64Sqrt: 0x9f, f64Add: 0xa0, f64Div: 0xa3, f64ConvertI32S: 0xb7, f64PromoteF32: 0xbb,
} as const;

/** SIMD opcodes (after the 0xfd prefix, LEB128-encoded). */
const SIMD = {
  load: 0x00, store: 0x0b, const: 0x0c, shuffle: 0x0d,
  i32x4Splat: 0x11, f32x4Splat: 0x13, f64x2Splat: 0x14, f32x4ExtractLane: 0x1f, f64x2ExtractLane: 0x21,
  f32x4Ge: 0x46,
  and: 0x4e, xor: 0x51, f32x4DemoteF64x2Zero: 0x5e, f64x2PromoteLow: 0x5f,
  i32x4Shl: 0xab, i32x4ShrU: 0xad, i32x4Add: 0xae, i32x4Mul: 0xb5,
  f32x4Abs: 0xe0, f32x4Neg: 0xe1, f32x4Sqrt: 0xe3, f32x4Add: 0xe4, f32x4Sub: 0xe5, f32x4Mul: 0xe6, f32x4Div: 0xe7,
  f32x4Max: 0xe9, f32x4Pmax: 0xeb, f64x2Add: 0xf0, f64x2Sub: 0xf1, f64x2Mul: 0xf2, f32x4ConvertI32x4S: 0xfa,
} as const;

/** Bytes of one v128 (and of the step of a v128 loop). */
export const V128_BYTES = 16;
/** log2 of the alignment loads and stores promise: float32 arrays are only 4-byte aligned in general. */
const ALIGN_LOG2 = 2;
const F32_LANES = 4;
/** Bytes 8..15 then 0..7: swaps a vector's halves, so promote_low reaches lanes 2 and 3. */
const SWAP_HALVES = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];
/** Bytes 0..7 of the first operand, then 0..7 of the second. */
const LOW_HALVES = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];

function uleb(n: number): Code {
  const out: Code = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): Code {
  const out: Code = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const simd = (op: number): Code => [0xfd, ...uleb(op)];
const bin = (op: number) => (a: Code, b: Code): Code => [...a, ...b, ...simd(op)];
const un = (op: number) => (a: Code): Code => [...a, ...simd(op)];

export const get = (i: number): Code => [OP.localGet, ...uleb(i)];
export const set = (i: number, value: Code): Code => [...value, OP.localSet, ...uleb(i)];
export const i32c = (n: number): Code => [OP.i32Const, ...sleb(n | 0)];
export const i32Add = (a: Code, b: Code): Code => [...a, ...b, OP.i32Add];
export const i32Sub = (a: Code, b: Code): Code => [...a, ...b, OP.i32Sub];
export const i32Mul = (a: Code, b: Code): Code => [...a, ...b, OP.i32Mul];
export const i32And = (a: Code, b: Code): Code => [...a, ...b, OP.i32And];
export const i32ShrU = (a: Code, b: Code): Code => [...a, ...b, OP.i32ShrU];
export const f32Add = (a: Code, b: Code): Code => [...a, ...b, OP.f32Add];
export const f32Mul = (a: Code, b: Code): Code => [...a, ...b, OP.f32Mul];
export const f32Div = (a: Code, b: Code): Code => [...a, ...b, OP.f32Div];
export const f32Sqrt = (a: Code): Code => [...a, OP.f32Sqrt];
export const f32FromI32 = (a: Code): Code => [...a, OP.f32ConvertI32S];
export const f64Add = (a: Code, b: Code): Code => [...a, ...b, OP.f64Add];
export const f64Div = (a: Code, b: Code): Code => [...a, ...b, OP.f64Div];
export const f64Sqrt = (a: Code): Code => [...a, OP.f64Sqrt];
export const f64FromI32 = (a: Code): Code => [...a, OP.f64ConvertI32S];
export const f64FromF32 = (a: Code): Code => [...a, OP.f64PromoteF32];
export const f64c = (x: number): Code => [0x44, ...new Uint8Array(new Float64Array([x]).buffer)];
export const f32c = (x: number): Code => [OP.f32Const, ...new Uint8Array(new Float32Array([x]).buffer)];

/** The i32 at `address` (4-byte aligned). */
export const i32Load = (address: Code): Code => [...address, OP.i32Load, ALIGN_LOG2, 0];

/** Stores the f64 expression `value` at `address` (8-byte aligned). */
export const f64Store = (address: Code, value: Code): Code => [...address, ...value, OP.f64Store, 3, 0];

/** `body` unless the i32 expression `a` >= `b`, unsigned. */
export const unlessGeU = (a: Code, b: Code, body: Code): Code => [OP.block, OP.emptyType, ...a, ...b, OP.i32GeU, OP.brIf, 0, ...body, OP.end];

/** v128 load / store at `address + offset` (address an i32 expression, offset a constant in bytes). */
export const load = (address: Code, offset = 0): Code => [...address, ...simd(SIMD.load), ALIGN_LOG2, ...uleb(offset)];
export const store = (address: Code, value: Code, offset = 0): Code => [...address, ...value, ...simd(SIMD.store), ALIGN_LOG2, ...uleb(offset)];

/** Four float32 lanes of `x`. */
export const f32x4Const = (x: number): Code => [...simd(SIMD.const), ...new Uint8Array(new Float32Array(F32_LANES).fill(x).buffer)];
/** The lanes `lanes` as int32. */
export const i32x4Const = (lanes: readonly [number, number, number, number]): Code => [...simd(SIMD.const), ...new Uint8Array(new Int32Array(lanes).buffer)];

export const f32x4 = {
  splat: un(SIMD.f32x4Splat),
  add: bin(SIMD.f32x4Add), sub: bin(SIMD.f32x4Sub), mul: bin(SIMD.f32x4Mul), div: bin(SIMD.f32x4Div),
  max: bin(SIMD.f32x4Max), ge: bin(SIMD.f32x4Ge),
  /** a < b ? b : a per lane (one maxps; `max` propagates a NaN in either operand, several instructions). */
  pmax: bin(SIMD.f32x4Pmax),
  abs: un(SIMD.f32x4Abs), neg: un(SIMD.f32x4Neg), sqrt: un(SIMD.f32x4Sqrt),
  /** Lanes converted from int32 (exact below 2^24). */
  fromI32: un(SIMD.f32x4ConvertI32x4S),
  /** The scalar f32 sum of the four lanes, ((l0 + l1) + l2) + l3. */
  sum: (a: Code, tmp: number): Code => [
    ...set(tmp, a),
    ...[0, 1, 2, 3].flatMap((lane) => [...get(tmp), ...simd(SIMD.f32x4ExtractLane), lane, ...(lane > 0 ? [OP.f32Add] : [])]),
  ],
  /** The scalar f32 maximum of the four lanes. */
  hmax: (a: Code, tmp: number): Code => [
    ...set(tmp, a),
    ...[0, 1, 2, 3].flatMap((lane) => [...get(tmp), ...simd(SIMD.f32x4ExtractLane), lane, ...(lane > 0 ? [OP.f32Max] : [])]),
  ],
};

export const i32x4 = {
  splat: un(SIMD.i32x4Splat),
  add: bin(SIMD.i32x4Add), mul: bin(SIMD.i32x4Mul),
  /** Shifts take an i32 count expression. */
  shl: (a: Code, n: number): Code => [...a, ...i32c(n), ...simd(SIMD.i32x4Shl)],
  shrU: (a: Code, n: number): Code => [...a, ...i32c(n), ...simd(SIMD.i32x4ShrU)],
};

export const v128 = { and: bin(SIMD.and), xor: bin(SIMD.xor) };

export const f64x2 = {
  splat: un(SIMD.f64x2Splat),
  add: bin(SIMD.f64x2Add), sub: bin(SIMD.f64x2Sub), mul: bin(SIMD.f64x2Mul),
  /** The scalar f64 sum of the two lanes. */
  sum: (a: Code, tmp: number): Code => [
    ...set(tmp, a), ...get(tmp), ...simd(SIMD.f64x2ExtractLane), 0, ...get(tmp), ...simd(SIMD.f64x2ExtractLane), 1, OP.f64Add,
  ],
  /** f32x4 of the float32-rounded lanes of `lo` then `hi`. */
  demotePair: (lo: Code, hi: Code): Code => [
    ...lo, ...simd(SIMD.f32x4DemoteF64x2Zero), ...hi, ...simd(SIMD.f32x4DemoteF64x2Zero), ...simd(SIMD.shuffle), ...LOW_HALVES,
  ],
  /** Lanes 0 and 1 of an f32x4, widened. */
  promoteLow: un(SIMD.f64x2PromoteLow),
  /** Lanes 2 and 3 of an f32x4 (in the local `tmp`), widened. */
  promoteHigh: (tmp: number): Code => [...get(tmp), ...get(tmp), ...simd(SIMD.shuffle), ...SWAP_HALVES, ...simd(SIMD.f64x2PromoteLow)],
};

/** `while (i < end) { body; i += step }` over i32 locals (unsigned compare). */
export function whileBelow(i: number, end: Code, step: number, body: Code): Code {
  return [
    OP.block, OP.emptyType, OP.loop, OP.emptyType,
    ...get(i), ...end, OP.i32GeU, OP.brIf, 1,
    ...body,
    ...set(i, i32Add(get(i), i32c(step))),
    OP.br, 0, OP.end, OP.end,
  ];
}

/**
 * A loop over `groups` v128 vectors, i (a zeroed i32 local) their byte offset: `steps(copy, offset)` is the work of
 * the vector at i + offset with copy `copy`'s locals, as statements (the same count for every copy). It runs `copies`
 * vectors an iteration, interleaved (statement s of copy 0, 1, ..., then statement s + 1), while that many are left,
 * then one an iteration (copy 0). Why: V8's x64 code keeps a function's instruction order, so a body that is one long
 * dependency chain (the exp and erf polynomials, the hash rounds) waits on each result in turn, and copies placed one
 * after another are a whole copy apart, further than the core's schedulers look ahead; side by side, independent
 * instructions overlap. Each vector's statements run in their order, so the results are unchanged. `copies` is a
 * power of two.
 */
export function interleavedLoop(i: number, groups: Code, copies: number, steps: (copy: number, offset: number) => Code[]): Code {
  const all = Array.from({ length: copies }, (_, k) => steps(k, k * V128_BYTES));
  const body = all[0]!.flatMap((_, s) => all.flatMap((copy) => copy[s]!));
  return [
    ...whileBelow(i, i32Mul(i32And(groups, i32c(-copies)), i32c(V128_BYTES)), copies * V128_BYTES, body),
    ...whileBelow(i, i32Mul(groups, i32c(V128_BYTES)), V128_BYTES, steps(0, 0).flat()),
  ];
}

/** `copies` sets of the locals `spec` from index `first` on (one per copy of an interleavedLoop body), and their types. */
export function localCopies<K extends string>(first: number, spec: Record<K, ValType>, copies: number): { index: Record<K, number>[]; types: ValType[] } {
  const index: Record<K, number>[] = [];
  const types: ValType[] = [];
  for (let k = 0; k < copies; k++) {
    const l = locals(first + types.length, spec);
    index.push(l.index);
    types.push(...l.types);
  }
  return { index, types };
}

/** One exported function: parameters, results, extra locals (index params.length onwards) and its body. */
export interface FuncSpec {
  name: string;
  params: ValType[];
  results: ValType[];
  locals: ValType[];
  body: Code;
}

/** Pages of the largest 32-bit memory: the maximum a shared memory import declares (any shared heap fits under it). */
const MAX_MEMORY_PAGES = 65536;

/** A module importing `env.memory` (declared shared, for a SharedArrayBuffer heap, where `shared`) and exporting `funcs` by name. */
function encodeModule(funcs: readonly FuncSpec[], shared: boolean): Uint8Array<ArrayBuffer> {
  const FUNC_TYPE = 0x60;
  const MEMORY_IMPORT = 0x02;
  const LIMITS_MIN_ONLY = 0x00;
  const LIMITS_SHARED_MIN_MAX = 0x03;
  const FUNC_EXPORT = 0x00;
  const vec = (items: Code): Code => [...uleb(items.length), ...items];
  const section = (id: number, body: Code): Code => [id, ...uleb(body.length), ...body];
  const name = (s: string): Code => vec([...new TextEncoder().encode(s)]);
  const localDecls = (types: ValType[]): Code => {
    const runs: [number, ValType][] = [];
    for (const t of types) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[1] === t) last[0]++;
      else runs.push([1, t]);
    }
    return [...uleb(runs.length), ...runs.flatMap(([n, t]) => [...uleb(n), t])];
  };
  const bodies = funcs.map((f) => {
    const b = [...localDecls(f.locals), ...f.body, OP.end];
    return [...uleb(b.length), ...b];
  });
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, [...uleb(funcs.length), ...funcs.flatMap((f) => [FUNC_TYPE, ...vec(f.params), ...vec(f.results)])]),
    ...section(2, [...uleb(1), ...name('env'), ...name('memory'), MEMORY_IMPORT,
      ...(shared ? [LIMITS_SHARED_MIN_MAX, 0, ...uleb(MAX_MEMORY_PAGES)] : [LIMITS_MIN_ONLY, 0])]),
    ...section(3, vec(funcs.map((_, i) => i))),
    ...section(7, [...uleb(funcs.length), ...funcs.flatMap((f, i) => [...name(f.name), FUNC_EXPORT, ...uleb(i)])]),
    ...section(10, [...uleb(funcs.length), ...bodies.flat()]),
  ]);
}

/** Locals after `params` parameters, by name: `index[name]` is a local's index, `types` the FuncSpec's `locals`. */
export function locals<K extends string>(params: number, spec: Record<K, ValType>): { index: Record<K, number>; types: ValType[] } {
  const index = {} as Record<K, number>;
  const types: ValType[] = [];
  for (const [k, t] of Object.entries(spec) as [K, ValType][]) {
    index[k] = params + types.length;
    types.push(t);
  }
  return { index, types };
}

/** A module's exports bound to memories, and threads running them on a shared one. */
export interface PerMemory<T> {
  /** The exports bound to `memory`, or null where this runtime has no wasm SIMD or no memory is given. */
  (memory: WebAssembly.Memory | undefined): T | null;
  /** Threads running the exports on `memory` beside the caller (simdThreads.ts), or null (unshared memory, one core, no wasm SIMD). */
  threads(memory: WebAssembly.Memory | undefined): SimdThreads<keyof T & string> | null;
}

/**
 * The module of `funcs()`, compiled on first use (once for unshared memories, once for shared ones) and
 * instantiated once per memory: the returned function gives the exports (typed `T` by the caller) bound to
 * `memory`, or null where this runtime has no wasm SIMD (the module does not validate) or no memory is given;
 * callers then keep their JavaScript loops.
 */
export function instancePerMemory<T>(funcs: () => readonly FuncSpec[]): PerMemory<T> {
  const compiled = new Map<boolean, WebAssembly.Module | null>();
  const instances = new WeakMap<WebAssembly.Memory, T>();
  let names: (keyof T & string)[] | undefined;
  const moduleFor = (shared: boolean): WebAssembly.Module | null => {
    if (!compiled.has(shared)) {
      const specs = funcs();
      names ??= specs.map((f) => f.name as keyof T & string);
      const bytes = encodeModule(specs, shared);
      compiled.set(shared, WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null);
    }
    return compiled.get(shared)!;
  };
  const bound = ((memory: WebAssembly.Memory | undefined) => {
    if (memory === undefined) return null;
    let inst = instances.get(memory);
    if (inst !== undefined) return inst;
    const module = moduleFor(isShared(memory.buffer));
    if (module === null) return null;
    inst = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as T;
    instances.set(memory, inst);
    return inst;
  }) as PerMemory<T>;
  bound.threads = (memory) => {
    if (memory === undefined || !isShared(memory.buffer)) return null;
    const module = moduleFor(true);
    return module === null ? null : simdThreads(module, memory, names!);
  };
  return bound;
}
