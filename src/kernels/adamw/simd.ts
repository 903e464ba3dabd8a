/**
 * The wasm backend's AdamW loops as WebAssembly SIMD (f32x4), operating in place on the tfjs-backend-wasm heap:
 * a JavaScript loop is scalar (~10 ns an element, slower than the stock kernels' SIMD passes it replaces), this one
 * runs four lanes an instruction. The module is assembled at run time (src/kernels/platform/wasmAsm.ts, no toolchain) and
 * instantiated once per heap, importing the backend's own WebAssembly.Memory.
 *
 *   adamw(p, g, m, v, pOut, mOut, vOut: byte offsets, groups: i32, coef, b1, 1-b1, b2, 1-b2, decay, bc2Sqrt, eps, stepSize: f32)
 *     the update of kernels/adamw over `groups` x 4 elements; every f32x4 op rounds as the scalar float32 op
 *     does, so results equal the host loop's (and the stock cpu kernels') bit for bit.
 *   sumsq(g: byte offset, groups: i32) -> f64
 *     sum of the float32 squares of groups x 4 elements, accumulated in double in 4 lanes.
 *   sumsqTo(g: byte offset, groups: i32, out: byte offset)
 *     the same sum stored as a float64 at `out`.
 * The caller handles the last n % 4 elements.
 */
import {
  F32, f32x4, F64, f64Add, f64Store, f64x2, get, I32, i32Add, i32c, i32Mul, instancePerMemory, load, locals, set, store, V128,
  V128_BYTES, whileBelow, type Code, type FuncSpec, type PerMemory, type ValType,
} from '../platform/wasmAsm.js';

/** Elements per SIMD group. */
export const SIMD_LANES = 4;

/** The f32 parameters of adamw, in order, each splatted into a v128 local of the same name. */
const ADAMW_SCALARS = ['coef', 'b1', 'o1', 'b2', 'o2', 'decay', 'bc2', 'eps', 'step'] as const;

function adamwFunc(): FuncSpec {
  const [p, g, m, v, pOut, mOut, vOut, groups] = [0, 1, 2, 3, 4, 5, 6, 7];
  const FIRST_SCALAR = 8;
  const { index: l, types } = locals(FIRST_SCALAR + ADAMW_SCALARS.length, {
    i: I32, end: I32, coef: V128, b1: V128, o1: V128, b2: V128, o2: V128, decay: V128, bc2: V128, eps: V128, step: V128,
    gi: V128, mi: V128, vi: V128,
  });
  const at = (base: number): Code => i32Add(get(base), get(l.i));
  const body = [
    ...set(l.gi, f32x4.mul(load(at(g)), get(l.coef))),
    ...set(l.mi, f32x4.add(f32x4.mul(load(at(m)), get(l.b1)), f32x4.mul(get(l.gi), get(l.o1)))),
    ...set(l.vi, f32x4.add(f32x4.mul(load(at(v)), get(l.b2)), f32x4.mul(f32x4.mul(get(l.gi), get(l.gi)), get(l.o2)))),
    ...store(at(mOut), get(l.mi)),
    ...store(at(vOut), get(l.vi)),
    // p * decay - (m' / (sqrt(v') / bc2Sqrt + eps)) * stepSize
    ...store(at(pOut), f32x4.sub(
      f32x4.mul(load(at(p)), get(l.decay)),
      f32x4.mul(f32x4.div(get(l.mi), f32x4.add(f32x4.div(f32x4.sqrt(get(l.vi)), get(l.bc2)), get(l.eps))), get(l.step)),
    )),
  ];
  return {
    name: 'adamw', params: [I32, I32, I32, I32, I32, I32, I32, I32, ...ADAMW_SCALARS.map((): ValType => F32)], results: [], locals: types,
    body: [
      ...ADAMW_SCALARS.flatMap((name, k) => set(l[name], f32x4.splat(get(FIRST_SCALAR + k)))),
      ...set(l.end, i32Mul(get(groups), i32c(V128_BYTES))),
      ...whileBelow(l.i, get(l.end), V128_BYTES, body),
    ],
  };
}

/** sumsq's loop, leaving the sum on the stack; `g` and `groups` the parameters' indices. */
function sumsqCode(g: number, groups: number, l: Record<'i' | 'end' | 'acc01' | 'acc23' | 'sq' | 'tmp', number>): Code {
  const body = [
    ...set(l.sq, load(i32Add(get(g), get(l.i)))),
    ...set(l.sq, f32x4.mul(get(l.sq), get(l.sq))),
    ...set(l.acc01, f64x2.add(get(l.acc01), f64x2.promoteLow(get(l.sq)))),
    ...set(l.acc23, f64x2.add(get(l.acc23), f64x2.promoteHigh(l.sq))),
  ];
  return [
    ...set(l.end, i32Mul(get(groups), i32c(V128_BYTES))),
    ...whileBelow(l.i, get(l.end), V128_BYTES, body),
    // (lane 0 + lane 1 of acc01) + (lane 0 + lane 1 of acc23)
    ...f64Add(f64x2.sum(get(l.acc01), l.tmp), f64x2.sum(get(l.acc23), l.tmp)),
  ];
}

const SUMSQ_LOCALS = { i: I32, end: I32, acc01: V128, acc23: V128, sq: V128, tmp: V128 } as const;

function sumsqFunc(): FuncSpec {
  const { index: l, types } = locals(2, SUMSQ_LOCALS);
  return { name: 'sumsq', params: [I32, I32], results: [F64], locals: types, body: sumsqCode(0, 1, l) };
}

/** sumsqTo(g, groups, out): sumsq(g, groups) stored as a float64 at `out` (for calls that run on the heap's threads). */
function sumsqToFunc(): FuncSpec {
  const { index: l, types } = locals(3, SUMSQ_LOCALS);
  return { name: 'sumsqTo', params: [I32, I32, I32], results: [], locals: types, body: f64Store(get(2), sumsqCode(0, 1, l)) };
}

export interface AdamWSimd {
  adamw(p: number, g: number, m: number, v: number, pOut: number, mOut: number, vOut: number, groups: number,
    coef: number, b1: number, oneMinusB1: number, b2: number, oneMinusB2: number, decay: number, bc2Sqrt: number, eps: number, stepSize: number): void;
  sumsq(g: number, groups: number): number;
  sumsqTo(g: number, groups: number, out: number): void;
}

/**
 * The SIMD loops bound to `memory` (unshared, or the threaded wasm build's shared heap), or null where this runtime
 * has no wasm SIMD, in which case the caller keeps the JavaScript loops.
 */
export const simdFor: PerMemory<AdamWSimd> = instancePerMemory<AdamWSimd>(() => [adamwFunc(), sumsqFunc(), sumsqToFunc()]);
