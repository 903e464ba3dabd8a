/**
 * WebAssembly SIMD (f32x4, f64x2) loops for the host backends' element-wise training kernels: GELU forward and
 * backward, LayerNorm forward and backward (kernels/layerNorm), dropout (kernels/dropout), the attention's
 * masked softmax rows and their gradient (kernels/attention), and the cpu backend's same-shape Add, Sub, Multiply
 * and RealDiv (kernels/stock). Assembled at run time
 * (src/kernels/platform/wasmAsm.ts) and instantiated on a given memory: the tfjs-backend-wasm heap, so the kernels read and
 * write tensors in place, or a private staging memory for the cpu backend. Where that memory is shared (the threaded
 * wasm build's heap; the staging memory where there are threads), the loops are cut into runs of rows or vectors that
 * the memory's worker threads take at the same time (SimdHost.callSplit, simdThreads.ts), with the same bits.
 *
 * Why: the JavaScript loops they replace are scalar (GELU: a Math.exp per element, ~17 ns; dropout: two 32-bit
 * hash rounds per element), slower than the stock wasm kernels they were meant to beat. Here four lanes go per
 * instruction, and exp is a polynomial:
 *   exp(x), x <= 0 (the only arguments used): 0 below EXP_MIN (-87; float32 exp is < 1.7e-38 there), else
 *     n = round(x log2 e); r = x - n ln2 (in two parts, Cody-Waite); exp = (1 + r + r^2 P(r)) * 2^n   (Cephes expf)
 *   erf: the Abramowitz-Stegun 7.1.26 form of kernels/layerNorm (|error| < 1.5e-7), in float32; one exp per element also
 *     gives GELU's density term, since exp(-(|x| / sqrt 2)^2) = exp(-x^2 / 2).
 * So GELU agrees with the float64 host formula within a few float32 ulps. LayerNorm's forward pass runs in float32
 * lanes; its backward pass in float64 lanes, as the scalar loop did (its dx is a difference of nearly equal terms;
 * float32 intermediates there moved test/train.test.ts's hand-computed AdamW step past its 2e-6 bound). Dropout is
 * integer arithmetic (i32x4.mul is Math.imul) plus an exact int-to-float conversion, scale and compare in float32:
 * bit for bit the host loop's.
 *
 * Functions (addresses are byte offsets; `groups` counts 4-element vectors; the caller does the last n % 4):
 *   gelu(x, y, groups)                       geluGrad(x, dy, dx, groups)
 *   dropout(x, out, groups, start, k1, k2, rate, scale)     element j has flat index start + j (kernels/dropout)
 *   layerNorm(x, gamma, beta, y, rows, H, eps)             H % 4 == 0
 *   layerNormGrad(x, gamma, dy, dx, acc, rows, H, eps)     acc: 2H float64 the column sums are added to:
 *                                                          dgamma to acc[0, H), dbeta to acc[H, 2H)
 *   softmaxRows(s, mask, rows, T, scale)                   T >= 4: rows of s -> softmax(s * scale + mask)
 *   softmaxGradRows(p, dp, rows, T)                        T >= 4: rows of p -> p * (dp - rowsum(dp * p))
 *   add|sub|mul|div(a, b, out, groups)                     out = a (op) b: one float32 operation, the JS loop's bits
 *   segmentSum(x, ids, out, rows, rowBytes, first, end)    out's rows [first, end) = the sums of x's rows by segment
 *                                                          id (the embedding gradient's scatter-add), float32 adds in
 *                                                          row order: the JS loop's bits
 */
import {
  F32, f32Add, f32c, f32Div, f32FromI32, f32Mul, f32Sqrt, f32x4, f32x4Const, F64, f64Add, f64c, f64Div,
  f64FromF32, f64FromI32, f64Sqrt, f64x2, get, I32, i32Add, i32And, i32c, i32Load, i32Mul, i32ShrU, i32Sub, i32x4, i32x4Const, instancePerMemory, load,
  interleavedLoop, localCopies, locals, set, store, unlessGeU, v128, V128, V128_BYTES, whileBelow, type Code, type FuncSpec, type PerMemory,
} from './wasmAsm.js';
import { hostThreadsAvailable, runParts, sharedParts, threadParts, type SimdThreads, type ThreadCall } from './simdThreads.js';
import { ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5, ERF_P, INV_SQRT_2PI } from './erf.js';

const ERF_A = [ERF_A5, ERF_A4, ERF_A3, ERF_A2, ERF_A1]; // erf.ts's, in Horner order
/** Cephes expf: the polynomial P (Horner order), ln 2 split in two, and the lowest argument (2^n stays normal). */
const EXP_P = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
const LN2_HI = 0.693359375;
const LN2_LO = -2.12194440e-4;
const EXP_MIN = -87;
const FLOAT_EXP_BIAS = 127;
const FLOAT_MANTISSA_BITS = 23;
/** 1.5 * 2^23: y + ROUND_MAGIC rounds y to an integer n, held in the sum's low bits as bits(ROUND_MAGIC) + n. */
const ROUND_MAGIC = 12582912;
const ROUND_MAGIC_BITS = 0x4b400000;
/** bits(y + ROUND_MAGIC) + POW2_BIAS = n + 127, the exponent field of 2^n. */
const POW2_BIAS = FLOAT_EXP_BIAS - ROUND_MAGIC_BITS;
const SIGN_BIT = -0x80000000;
/** lowbias32 (kernels/dropout): its multipliers and shifts. */
const MIX_MUL = [0x7feb352d, 0x846ca68b];
const MIX_SHIFT = [16, 15, 16];
/** 2^-24 and the mantissa shift: kernels/dropout's uniform is (h >>> 8) * 2^-24. */
const INV_2_24 = 1 / 16777216;
const UNIFORM_SHIFT = 8;
const F32_BYTES = 4;
const F64_BYTES = 8;
const LANES = 4;
/** log2(LANES): an element count shifted right by it is its count of whole vectors. */
const LANE_SHIFT = Math.log2(LANES);

/** Horner's rule as statements on the local `acc`, t a local: acc = c0 t + c1, then acc = acc t + c_k for each next c_k. */
function hornerSteps(coefs: number[], t: number, acc: number): Code[] {
  const steps: Code[] = [set(acc, f32x4.add(f32x4.mul(f32x4Const(coefs[0]!), get(t)), f32x4Const(coefs[1]!)))];
  for (const c of coefs.slice(2)) steps.push(set(acc, f32x4.add(f32x4.mul(get(acc), get(t)), f32x4Const(c))));
  return steps;
}

/**
 * Statements setting the local `x` (lanes <= 0) to exp(x) (scratch locals n, r, h); 0 where the argument is below
 * EXP_MIN. n is rounded to an integer by adding and taking off ROUND_MAGIC (round to nearest even, as f32x4.nearest;
 * |n| < 2^22), and the sum's low mantissa bits are n itself, so 2^n's bits come from integer adds and a shift instead
 * of a float-to-int conversion; the clamp is a pmax (x is never NaN below it: a NaN lane stays NaN either way).
 */
function expSteps(x: number, n: number, r: number, h: number): Code[] {
  const nFloat = f32x4.sub(get(n), f32x4Const(ROUND_MAGIC));
  return [
    set(r, f32x4.pmax(get(x), f32x4Const(EXP_MIN))),
    set(n, f32x4.add(f32x4.mul(get(r), f32x4Const(Math.LOG2E)), f32x4Const(ROUND_MAGIC))),
    set(r, f32x4.sub(f32x4.sub(get(r), f32x4.mul(nFloat, f32x4Const(LN2_HI))), f32x4.mul(nFloat, f32x4Const(LN2_LO)))),
    ...hornerSteps(EXP_P, r, h),
    set(h, f32x4.mul(f32x4.mul(get(h), get(r)), get(r))),
    set(h, f32x4.add(f32x4.add(get(h), get(r)), f32x4Const(1))),
    set(x, v128.and(
      f32x4.mul(get(h), i32x4.shl(i32x4.add(get(n), i32x4Const([POW2_BIAS, POW2_BIAS, POW2_BIAS, POW2_BIAS])), FLOAT_MANTISSA_BITS)),
      f32x4.ge(get(x), f32x4Const(EXP_MIN)),
    )),
  ];
}

/** Vectors of the element-wise loops (gelu, geluGrad, dropout, the softmax's exp) an iteration: see interleavedLoop. */
const COPIES = 4;

type ErfLocals = Record<'v' | 'z' | 'a' | 't' | 'n' | 'r' | 'h' | 'e' | 'erf', number>;
/** A vector's locals in gelu and geluGrad (one set per copy). */
const ERF_LOCALS = { v: V128, z: V128, a: V128, t: V128, n: V128, r: V128, h: V128, e: V128, erf: V128 } as const;

/**
 * Shared by gelu and geluGrad, as statements: v = the vector at x + i + offset; z = v / sqrt 2; erf(z) and e =
 * exp(-z^2) in locals.
 */
function erfSteps(x: number, i: number, offset: number, l: ErfLocals): Code[] {
  return [
    set(l.v, load(i32Add(get(x), get(i)), offset)),
    set(l.z, f32x4.mul(get(l.v), f32x4Const(Math.SQRT1_2))),
    set(l.a, f32x4.abs(get(l.z))),
    set(l.t, f32x4.div(f32x4Const(1), f32x4.add(f32x4Const(1), f32x4.mul(f32x4Const(ERF_P), get(l.a))))),
    set(l.e, f32x4.neg(f32x4.mul(get(l.a), get(l.a)))),
    ...expSteps(l.e, l.n, l.r, l.h),
    // sign(z) * (1 - P(t) t e): the magnitude's sign bit replaced by z's
    ...hornerSteps(ERF_A, l.t, l.h),
    set(l.erf, v128.xor(
      f32x4.sub(f32x4Const(1), f32x4.mul(f32x4.mul(get(l.h), get(l.t)), get(l.e))),
      v128.and(get(l.z), i32x4Const([SIGN_BIT, SIGN_BIT, SIGN_BIT, SIGN_BIT])),
    )),
  ];
}

function geluFunc(): FuncSpec {
  const [x, y, groups, i] = [0, 1, 2, 3];
  const { index: c, types } = localCopies(4, ERF_LOCALS, COPIES);
  const vector = (k: number, offset: number): Code[] => {
    const l = c[k]!;
    return [
      ...erfSteps(x, i, offset, l),
      store(i32Add(get(y), get(i)), f32x4.mul(f32x4.mul(f32x4Const(0.5), get(l.v)), f32x4.add(f32x4Const(1), get(l.erf))), offset),
    ];
  };
  return { name: 'gelu', params: [I32, I32, I32], results: [], locals: [I32, ...types], body: interleavedLoop(i, get(groups), COPIES, vector) };
}

function geluGradFunc(): FuncSpec {
  const [x, dy, dx, groups, i] = [0, 1, 2, 3, 4];
  const { index: c, types } = localCopies(5, ERF_LOCALS, COPIES);
  const vector = (k: number, offset: number): Code[] => {
    const l = c[k]!;
    const phi = f32x4.mul(f32x4Const(0.5), f32x4.add(f32x4Const(1), get(l.erf)));
    const density = f32x4.mul(f32x4.mul(get(l.v), get(l.e)), f32x4Const(INV_SQRT_2PI));
    return [
      ...erfSteps(x, i, offset, l),
      store(i32Add(get(dx), get(i)), f32x4.mul(load(i32Add(get(dy), get(i)), offset), f32x4.add(phi, density)), offset),
    ];
  };
  return { name: 'geluGrad', params: [I32, I32, I32, I32], results: [], locals: [I32, ...types], body: interleavedLoop(i, get(groups), COPIES, vector) };
}

function dropoutFunc(): FuncSpec {
  const [x, out, groups, start, k1, k2, rate, scale] = [0, 1, 2, 3, 4, 5, 6, 7];
  const { index: l, types } = locals(8, { i: I32, lanes: V128, K1: V128, K2: V128, R: V128, S: V128 });
  const { index: c, types: copyTypes } = localCopies(8 + types.length, { h: V128 }, COPIES);
  const vector = (k: number, offset: number): Code[] => {
    const h = c[k]!.h;
    const mix = (): Code[] => [
      set(h, v128.xor(get(h), i32x4.shrU(get(h), MIX_SHIFT[0]!))),
      set(h, i32x4.mul(get(h), i32x4Const([MIX_MUL[0]!, MIX_MUL[0]!, MIX_MUL[0]!, MIX_MUL[0]!]))),
      set(h, v128.xor(get(h), i32x4.shrU(get(h), MIX_SHIFT[1]!))),
      set(h, i32x4.mul(get(h), i32x4Const([MIX_MUL[1]!, MIX_MUL[1]!, MIX_MUL[1]!, MIX_MUL[1]!]))),
      set(h, v128.xor(get(h), i32x4.shrU(get(h), MIX_SHIFT[2]!))),
    ];
    // the flat indices of the vector's elements: start + (i + offset) / 4 + [0, 1, 2, 3]
    const index = i32x4.add(get(l.lanes), i32x4.splat(i32ShrU(i32Add(get(l.i), i32c(offset)), i32c(2))));
    return [
      set(h, v128.xor(index, get(l.K1))), ...mix(),
      set(h, v128.xor(get(h), get(l.K2))), ...mix(),
      store(i32Add(get(out), get(l.i)), v128.and(
        f32x4.mul(load(i32Add(get(x), get(l.i)), offset), get(l.S)),
        f32x4.ge(f32x4.mul(f32x4.fromI32(i32x4.shrU(get(h), UNIFORM_SHIFT)), f32x4Const(INV_2_24)), get(l.R)),
      ), offset),
    ];
  };
  return {
    name: 'dropout', params: [I32, I32, I32, I32, I32, I32, F32, F32], results: [], locals: [...types, ...copyTypes],
    body: [
      ...set(l.K1, i32x4.splat(get(k1))), ...set(l.K2, i32x4.splat(get(k2))),
      ...set(l.R, f32x4.splat(get(rate))), ...set(l.S, f32x4.splat(get(scale))),
      ...set(l.lanes, i32x4.add(i32x4.splat(get(start)), i32x4Const([0, 1, 2, 3]))),
      ...interleavedLoop(l.i, get(groups), COPIES, vector),
    ],
  };
}

/**
 * The locals and code of a row loop over T elements, T >= 4 (softmaxRows, softmaxGradRows): its first T - T % 4
 * elements are whole vectors (`vecBytes`); the T % 4 elements after them (the tail) are the last lanes of the row's
 * last vector, at `tailOff` bytes (it overlaps the one before), which `tail(body)` runs `body` on once where there is
 * a tail and `blend(old, v)` writes: the tail lanes (`M`) of v, the other lanes of old.
 */
function rowTail(T: number, l: { k: number; rowBytes: number; vecBytes: number; tailOff: number; tailEnd: number; M: number }): {
  setup: Code; tail: (body: Code) => Code; blend: (old: Code, v: Code) => Code; tailAt: (base: number) => Code;
} {
  const t = i32And(get(T), i32c(SIMD_LANES - 1));
  return {
    setup: [
      ...set(l.rowBytes, i32Mul(get(T), i32c(F32_BYTES))),
      ...set(l.vecBytes, i32Mul(i32And(get(T), i32c(-SIMD_LANES)), i32c(F32_BYTES))),
      ...set(l.tailOff, i32Add(get(l.rowBytes), i32c(-V128_BYTES))),
      // one pass of the tail loop where T % 4 > 0: ((T % 4 + 3) >> LANE_SHIFT) * 16 bytes
      ...set(l.tailEnd, i32Mul(i32ShrU(i32Add(t, i32c(SIMD_LANES - 1)), i32c(LANE_SHIFT)), i32c(V128_BYTES))),
      // lane j is in the tail where j + T % 4 >= 4: ((j + T % 4) >> LANE_SHIFT) * -1, all ones
      ...set(l.M, i32x4.mul(i32x4.shrU(i32x4.add(i32x4Const([0, 1, 2, 3]), i32x4.splat(t)), LANE_SHIFT), i32x4Const([-1, -1, -1, -1]))),
    ],
    tail: (body) => [...set(l.k, i32c(0)), ...whileBelow(l.k, get(l.tailEnd), V128_BYTES, body)],
    blend: (old, v) => v128.xor(old, v128.and(v128.xor(old, v), get(l.M))),
    tailAt: (base) => i32Add(get(base), get(l.tailOff)),
  };
}

/**
 * softmaxRows(s, mask, rows, T, scale): each of `rows` rows of T elements (T >= 4) at s becomes softmax(s * scale +
 * mask) in place, mask one row of T: v = s * scale + mask, m = max(v), e = exp(v - m), e / sum(e). A row whose
 * elements are all equal (every key masked) becomes uniform. The sum adds the vectors' lanes, then the tail's.
 */
function softmaxRowsFunc(): FuncSpec {
  const [s, mask, rows, T, scale] = [0, 1, 2, 3, 4];
  const { index: l, types: rowTypes } = locals(5, {
    r: I32, k: I32, rowBytes: I32, vecBytes: I32, tailOff: I32, tailEnd: I32, ps: I32,
    S: V128, M: V128, acc: V128, v: V128, old: V128, n: V128, rr: V128, h: V128, tmp: V128, top: V128,
  });
  // the exp pass's vectors, COPIES an iteration (interleavedLoop): each copy's locals
  const { index: e, types: expTypes } = localCopies(5 + rowTypes.length, { v: V128, n: V128, r: V128, h: V128 }, COPIES);
  const types = [...rowTypes, ...expTypes];
  const at = (base: number): Code => i32Add(get(base), get(l.k));
  const { setup, tail, blend, tailAt } = rowTail(T, l);
  const row = [
    ...set(l.acc, f32x4Const(-Infinity)), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.vecBytes), V128_BYTES, [
      ...set(l.v, f32x4.add(f32x4.mul(load(at(l.ps)), get(l.S)), load(at(mask)))),
      ...store(at(l.ps), get(l.v)),
      ...set(l.acc, f32x4.max(get(l.acc), get(l.v))),
    ]),
    ...tail([
      ...set(l.old, load(tailAt(l.ps))),
      ...set(l.v, blend(get(l.old), f32x4.add(f32x4.mul(get(l.old), get(l.S)), load(tailAt(mask))))),
      ...store(tailAt(l.ps), get(l.v)),
      ...set(l.acc, f32x4.max(get(l.acc), get(l.v))),
    ]),
    ...set(l.top, f32x4.splat(f32x4.hmax(get(l.acc), l.tmp))),
    ...set(l.acc, f32x4Const(0)), ...set(l.k, i32c(0)),
    // the sum adds the vectors in row order (each copy's add is its last statement, the copies in order)
    ...interleavedLoop(l.k, i32ShrU(get(T), i32c(LANE_SHIFT)), COPIES, (copy, offset) => {
      const c = e[copy]!;
      return [
        set(c.v, f32x4.sub(load(at(l.ps), offset), get(l.top))),
        ...expSteps(c.v, c.n, c.r, c.h),
        store(at(l.ps), get(c.v), offset),
        set(l.acc, f32x4.add(get(l.acc), get(c.v))),
      ];
    }),
    ...tail([
      ...set(l.old, load(tailAt(l.ps))),
      ...set(l.v, f32x4.sub(get(l.old), get(l.top))),
      ...expSteps(l.v, l.n, l.rr, l.h).flat(),
      ...store(tailAt(l.ps), blend(get(l.old), get(l.v))),
      ...set(l.acc, f32x4.add(get(l.acc), v128.and(get(l.v), get(l.M)))),
    ]),
    ...set(l.acc, f32x4.splat(f32x4.sum(get(l.acc), l.tmp))),
    ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.vecBytes), V128_BYTES, store(at(l.ps), f32x4.div(load(at(l.ps)), get(l.acc)))),
    ...tail([
      ...set(l.old, load(tailAt(l.ps))),
      ...store(tailAt(l.ps), blend(get(l.old), f32x4.div(get(l.old), get(l.acc)))),
    ]),
    ...set(l.ps, i32Add(get(l.ps), get(l.rowBytes))),
  ];
  return {
    name: 'softmaxRows', params: [I32, I32, I32, I32, F32], results: [], locals: types,
    body: [...setup, ...set(l.S, f32x4.splat(get(scale))), ...set(l.ps, get(s)), ...whileBelow(l.r, get(rows), 1, row)],
  };
}

/**
 * softmaxGradRows(p, dp, rows, T): each of `rows` rows of T elements (T >= 4) of p (softmax probabilities) becomes
 * p * (dp - sum(dp * p)) in place, dp the probabilities' gradient (same layout).
 */
function softmaxGradRowsFunc(): FuncSpec {
  const [p, dp, rows, T] = [0, 1, 2, 3];
  const { index: l, types } = locals(4, { r: I32, k: I32, rowBytes: I32, vecBytes: I32, tailOff: I32, tailEnd: I32, pp: I32, pd: I32, M: V128, acc: V128, old: V128, tmp: V128 });
  const at = (base: number): Code => i32Add(get(base), get(l.k));
  const { setup, tail, blend, tailAt } = rowTail(T, l);
  const row = [
    ...set(l.acc, f32x4Const(0)), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.vecBytes), V128_BYTES, set(l.acc, f32x4.add(get(l.acc), f32x4.mul(load(at(l.pd)), load(at(l.pp)))))),
    ...tail(set(l.acc, f32x4.add(get(l.acc), v128.and(f32x4.mul(load(tailAt(l.pd)), load(tailAt(l.pp))), get(l.M))))),
    ...set(l.acc, f32x4.splat(f32x4.sum(get(l.acc), l.tmp))),
    ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.vecBytes), V128_BYTES, store(at(l.pp), f32x4.mul(load(at(l.pp)), f32x4.sub(load(at(l.pd)), get(l.acc))))),
    ...tail([
      ...set(l.old, load(tailAt(l.pp))),
      ...store(tailAt(l.pp), blend(get(l.old), f32x4.mul(get(l.old), f32x4.sub(load(tailAt(l.pd)), get(l.acc))))),
    ]),
    ...set(l.pp, i32Add(get(l.pp), get(l.rowBytes))),
    ...set(l.pd, i32Add(get(l.pd), get(l.rowBytes))),
  ];
  return {
    name: 'softmaxGradRows', params: [I32, I32, I32, I32], results: [], locals: types,
    body: [...setup, ...set(l.pp, get(p)), ...set(l.pd, get(dp)), ...whileBelow(l.r, get(rows), 1, row)],
  };
}

/** The element-wise binary ops (the cpu backend's same-shape Add, Sub, Multiply and RealDiv), as f32x4 operations. */
const BINARY_LOOPS = { add: f32x4.add, sub: f32x4.sub, mul: f32x4.mul, div: f32x4.div } as const;
export type BinaryLoop = keyof typeof BINARY_LOOPS;

/** out = a (op) b over `groups` groups of 4. */
function binaryFunc(name: BinaryLoop): FuncSpec {
  const [a, b, out, groups] = [0, 1, 2, 3];
  const { index: l, types } = locals(4, { i: I32 });
  const at = (base: number): Code => i32Add(get(base), get(l.i));
  const body = store(at(out), BINARY_LOOPS[name](load(at(a)), load(at(b))));
  return { name, params: [I32, I32, I32, I32], results: [], locals: types, body: whileBelow(l.i, i32Mul(get(groups), i32c(V128_BYTES)), V128_BYTES, body) };
}

/**
 * segmentSum(x, ids, out, rows, rowBytes, first, end): rows [first, end) of out (rowBytes each, a multiple of 16)
 * zeroed, then x's row i added to out's row ids[i] for each i < rows, in order, where ids[i] is in [first, end).
 */
function segmentSumFunc(): FuncSpec {
  const [x, ids, out, rows, rowBytes, first, end] = [0, 1, 2, 3, 4, 5, 6];
  const { index: l, types } = locals(7, { i: I32, k: I32, s: I32, from: I32, to: I32 });
  const at = (base: number): Code => i32Add(get(base), get(l.k));
  return {
    name: 'segmentSum', params: [I32, I32, I32, I32, I32, I32, I32], results: [], locals: types,
    body: [
      ...set(l.to, i32Add(get(out), i32Mul(get(first), get(rowBytes)))),
      ...whileBelow(l.k, i32Mul(i32Sub(get(end), get(first)), get(rowBytes)), V128_BYTES, store(at(l.to), f32x4Const(0))),
      ...whileBelow(l.i, get(rows), 1, [
        ...set(l.s, i32Load(i32Add(get(ids), i32Mul(get(l.i), i32c(F32_BYTES))))),
        ...unlessGeU(i32Sub(get(l.s), get(first)), i32Sub(get(end), get(first)), [
          ...set(l.to, i32Add(get(out), i32Mul(get(l.s), get(rowBytes)))),
          ...set(l.from, i32Add(get(x), i32Mul(get(l.i), get(rowBytes)))),
          ...set(l.k, i32c(0)),
          ...whileBelow(l.k, get(rowBytes), V128_BYTES, store(at(l.to), f32x4.add(load(at(l.to)), load(at(l.from))))),
        ]),
      ]),
    ],
  };
}

/** mean and rstd of the row at `px` (rowBytes long) into splatted locals, via the accumulator `acc`. */
function rowStats(px: number, rowBytes: number, invH: number, eps: number, l: Record<'k' | 'acc' | 'd' | 'tmp' | 'mean' | 'rstd', number>): Code {
  const x = load(i32Add(get(px), get(l.k)));
  return [
    ...set(l.acc, f32x4Const(0)), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(rowBytes), V128_BYTES, set(l.acc, f32x4.add(get(l.acc), x))),
    ...set(l.mean, f32x4.splat(f32Mul(f32x4.sum(get(l.acc), l.tmp), get(invH)))),
    ...set(l.acc, f32x4Const(0)), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(rowBytes), V128_BYTES, [
      ...set(l.d, f32x4.sub(x, get(l.mean))),
      ...set(l.acc, f32x4.add(get(l.acc), f32x4.mul(get(l.d), get(l.d)))),
    ]),
    ...set(l.rstd, f32x4.splat(f32Div(f32c(1), f32Sqrt(f32Add(f32Mul(f32x4.sum(get(l.acc), l.tmp), get(invH)), get(eps)))))),
  ];
}

const ROW_LOCALS = { r: I32, k: I32, rowBytes: I32, invH: F32, acc: V128, d: V128, tmp: V128, mean: V128, rstd: V128 } as const;

/** rowBytes = 4 H and invH = 1 / H from the parameter H. */
function rowSetup(H: number, l: Record<'rowBytes' | 'invH', number>): Code {
  return [...set(l.rowBytes, i32Mul(get(H), i32c(F32_BYTES))), ...set(l.invH, f32Div(f32c(1), f32FromI32(get(H))))];
}

function layerNormFunc(): FuncSpec {
  const [x, gamma, beta, y, rows, H, eps] = [0, 1, 2, 3, 4, 5, 6];
  const { index: l, types } = locals(7, { ...ROW_LOCALS, px: I32, py: I32 });
  const at = (base: number): Code => i32Add(get(base), get(l.k));
  const row = [
    ...rowStats(l.px, l.rowBytes, l.invH, eps, l),
    ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.rowBytes), V128_BYTES, store(at(l.py), f32x4.add(
      f32x4.mul(f32x4.mul(f32x4.sub(load(at(l.px)), get(l.mean)), get(l.rstd)), load(at(gamma))), load(at(beta))))),
    ...set(l.px, i32Add(get(l.px), get(l.rowBytes))),
    ...set(l.py, i32Add(get(l.py), get(l.rowBytes))),
  ];
  return {
    name: 'layerNorm', params: [I32, I32, I32, I32, I32, I32, F32], results: [], locals: types,
    body: [...rowSetup(H, l), ...set(l.px, get(x)), ...set(l.py, get(y)), ...whileBelow(l.r, get(rows), 1, row)],
  };
}

/**
 * The backward pass in float64 lanes (each f32x4 widened to two f64x2), as the scalar loop computes it: its dx is a
 * difference of nearly equal terms, where float32 intermediates would add several ulps.
 */
function layerNormGradFunc(): FuncSpec {
  const [x, gamma, dy, dx, acc, rows, H, eps] = [0, 1, 2, 3, 4, 5, 6, 7];
  const { index: l, types } = locals(8, {
    r: I32, k: I32, rowBytes: I32, px: I32, pdy: I32, pdx: I32, dgAt: I32, dbAt: I32, hF: F64,
    v: V128, s: V128, tmp: V128, mean: V128, rstd: V128, mg: V128, mgx: V128, sg: V128, sgx: V128,
    xlo: V128, xhi: V128, dlo: V128, dhi: V128, glo: V128, ghi: V128,
  });
  const at = (base: number): Code => i32Add(get(base), get(l.k));
  /** lo, hi = the f32x4 at `address` widened. */
  const halves = (address: Code, lo: number, hi: number): Code => [
    ...set(l.v, load(address)), ...set(lo, f64x2.promoteLow(get(l.v))), ...set(hi, f64x2.promoteHigh(l.v)),
  ];
  const perRow = (value: number): Code => f64x2.splat(f64Div(f64x2.sum(get(value), l.tmp), get(l.hF)));
  /** xhat (xlo, xhi), dy (dlo, dhi) and g = dy * gamma (glo, ghi) of group k. */
  const terms = [
    ...halves(at(l.px), l.xlo, l.xhi),
    ...set(l.xlo, f64x2.mul(f64x2.sub(get(l.xlo), get(l.mean)), get(l.rstd))),
    ...set(l.xhi, f64x2.mul(f64x2.sub(get(l.xhi), get(l.mean)), get(l.rstd))),
    ...halves(at(l.pdy), l.dlo, l.dhi),
    ...halves(at(gamma), l.glo, l.ghi),
    ...set(l.glo, f64x2.mul(get(l.dlo), get(l.glo))),
    ...set(l.ghi, f64x2.mul(get(l.dhi), get(l.ghi))),
  ];
  /** The float64 pair at `address` + offset += `value`. */
  const addTo = (address: number, offset: number, value: Code): Code =>
    store(get(address), f64x2.add(load(get(address), offset), value), offset);
  const dxOf = (xh: number, g: number): Code =>
    f64x2.mul(get(l.rstd), f64x2.sub(f64x2.sub(get(g), get(l.mg)), f64x2.mul(get(xh), get(l.mgx))));
  const zero = f32x4Const(0); // also two float64 zeros
  const row = [
    // mean, then rstd = 1 / sqrt(mean((x - mean)^2) + eps)
    ...set(l.s, zero), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.rowBytes), V128_BYTES, [
      ...halves(at(l.px), l.xlo, l.xhi), ...set(l.s, f64x2.add(get(l.s), f64x2.add(get(l.xlo), get(l.xhi)))),
    ]),
    ...set(l.mean, perRow(l.s)),
    ...set(l.s, zero), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.rowBytes), V128_BYTES, [
      ...halves(at(l.px), l.xlo, l.xhi),
      ...set(l.xlo, f64x2.sub(get(l.xlo), get(l.mean))), ...set(l.xhi, f64x2.sub(get(l.xhi), get(l.mean))),
      ...set(l.s, f64x2.add(get(l.s), f64x2.add(f64x2.mul(get(l.xlo), get(l.xlo)), f64x2.mul(get(l.xhi), get(l.xhi))))),
    ]),
    ...set(l.rstd, f64x2.splat(f64Div(f64c(1), f64Sqrt(f64Add(f64Div(f64x2.sum(get(l.s), l.tmp), get(l.hF)), f64FromF32(get(eps))))))),
    // sums of g and g * xhat over the row; dgamma += dy * xhat, dbeta += dy (float64 element k at acc + 8k, acc + 8H + 8k)
    ...set(l.sg, zero), ...set(l.sgx, zero), ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.rowBytes), V128_BYTES, [
      ...terms,
      ...set(l.sg, f64x2.add(get(l.sg), f64x2.add(get(l.glo), get(l.ghi)))),
      ...set(l.sgx, f64x2.add(get(l.sgx), f64x2.add(f64x2.mul(get(l.glo), get(l.xlo)), f64x2.mul(get(l.ghi), get(l.xhi))))),
      ...set(l.dgAt, i32Add(get(acc), i32Mul(get(l.k), i32c(F64_BYTES / F32_BYTES)))),
      ...set(l.dbAt, i32Add(get(l.dgAt), i32Mul(get(l.rowBytes), i32c(F64_BYTES / F32_BYTES)))),
      ...addTo(l.dgAt, 0, f64x2.mul(get(l.dlo), get(l.xlo))),
      ...addTo(l.dgAt, V128_BYTES, f64x2.mul(get(l.dhi), get(l.xhi))),
      ...addTo(l.dbAt, 0, get(l.dlo)),
      ...addTo(l.dbAt, V128_BYTES, get(l.dhi)),
    ]),
    ...set(l.mg, perRow(l.sg)),
    ...set(l.mgx, perRow(l.sgx)),
    // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), rounded to float32
    ...set(l.k, i32c(0)),
    ...whileBelow(l.k, get(l.rowBytes), V128_BYTES, [
      ...terms,
      ...store(at(l.pdx), f64x2.demotePair(dxOf(l.xlo, l.glo), dxOf(l.xhi, l.ghi))),
    ]),
    ...set(l.px, i32Add(get(l.px), get(l.rowBytes))),
    ...set(l.pdy, i32Add(get(l.pdy), get(l.rowBytes))),
    ...set(l.pdx, i32Add(get(l.pdx), get(l.rowBytes))),
  ];
  return {
    name: 'layerNormGrad', params: [I32, I32, I32, I32, I32, I32, I32, F32], results: [], locals: types,
    body: [
      ...set(l.rowBytes, i32Mul(get(H), i32c(F32_BYTES))), ...set(l.hF, f64FromI32(get(H))),
      ...set(l.px, get(x)), ...set(l.pdy, get(dy)), ...set(l.pdx, get(dx)), ...whileBelow(l.r, get(rows), 1, row),
    ],
  };
}

/** The module's exports (addresses in bytes, see the module comment). */
export interface HostSimd {
  gelu(x: number, y: number, groups: number): void;
  geluGrad(x: number, dy: number, dx: number, groups: number): void;
  dropout(x: number, out: number, groups: number, start: number, k1: number, k2: number, rate: number, scale: number): void;
  layerNorm(x: number, gamma: number, beta: number, y: number, rows: number, H: number, eps: number): void;
  layerNormGrad(x: number, gamma: number, dy: number, dx: number, acc: number, rows: number, H: number, eps: number): void;
  softmaxRows(s: number, mask: number, rows: number, T: number, scale: number): void;
  softmaxGradRows(p: number, dp: number, rows: number, T: number): void;
  add(a: number, b: number, out: number, groups: number): void;
  sub(a: number, b: number, out: number, groups: number): void;
  mul(a: number, b: number, out: number, groups: number): void;
  div(a: number, b: number, out: number, groups: number): void;
  segmentSum(x: number, ids: number, out: number, rows: number, rowBytes: number, first: number, end: number): void;
}

/** Elements per SIMD group; LayerNorm's H must be a multiple of it. */
export const SIMD_LANES = LANES;

/**
 * The SIMD loops bound to `memory` (unshared, or the threaded wasm build's shared heap), or null where this runtime
 * has no wasm SIMD; callers then keep their JavaScript loops.
 */
const hostSimdFor: PerMemory<HostSimd> = instancePerMemory<HostSimd>(
  () => [geluFunc(), geluGradFunc(), dropoutFunc(), layerNormFunc(), layerNormGradFunc(), softmaxRowsFunc(), softmaxGradRowsFunc(),
    ...(Object.keys(BINARY_LOOPS) as BinaryLoop[]).map(binaryFunc), segmentSumFunc()]);

// ---------------------------------------------------------------------------------------------------------------
// The loops over Float32Arrays: in place where the arrays are views of the module's memory (the wasm heap), or
// copied through a private staging memory in bounded chunks (the cpu backend's JS arrays).
// ---------------------------------------------------------------------------------------------------------------

/** Elements per array a staged call copies at most: bounds the staging memory (which never shrinks). */
const STAGE_CHUNK = 1 << 18;
/** Elements per in-place call (whole tensors, in practice). */
const HEAP_CHUNK = 1 << 30;
const WASM_PAGE_BYTES = 65536;

/** One call of a HostSimd export, by name, as a thread runs it. */
export type SimdCall = ThreadCall<keyof HostSimd>;

/** Float32Arrays at addresses of a SIMD module's memory. */
export interface SimdHost {
  /**
   * Calls `run` with the byte addresses of `inputs` then `outputs` (copied in and out where they live elsewhere;
   * an array in both lists is read and written at one address).
   */
  call(inputs: Float32Array[], outputs: Float32Array[], run: (simd: HostSimd, addresses: number[]) => void): void;
  /**
   * As `call`, the work given as calls cut into parts that write apart (`plan(addresses, parts)`: at most `parts`
   * lists; SHARE_PARTS a thread, which the threads share, simdThreads.ts), run at once on the memory's threads, or in
   * turn where it has none.
   */
  callSplit(inputs: Float32Array[], outputs: Float32Array[], plan: (addresses: number[], threads: number) => SimdCall[][]): void;
  /** Elements per call of the element-wise loops (a multiple of SIMD_LANES). */
  readonly chunk: number;
  /** Threads `callSplit` runs on, the calling one included: 1 once a worker's stop retired them (simdThreads.ts). */
  readonly threads: number;
  /** Whether the loops run on the arrays where they are (the wasm heap), not on copies. */
  readonly inPlace: boolean;
}

/** Threads a memory's loops run on: its pool's count (1 once the pool is retired), 1 without a pool. */
const countOf = (threads: SimdThreads<keyof HostSimd> | null): number => threads?.count ?? 1;

const heapHosts = new WeakMap<WebAssembly.Memory, SimdHost | null>();

/**
 * The loops in place on `memory` (arrays must be views of it), or null without wasm SIMD or without the memory; made
 * once per memory (the wasm kernels ask for it at every call).
 */
export function heapSimdHost(memory: WebAssembly.Memory | undefined): SimdHost | null {
  if (memory === undefined) return null;
  if (heapHosts.has(memory)) return heapHosts.get(memory)!;
  const simd = hostSimdFor(memory);
  const threads = hostSimdFor.threads(memory);
  const addresses = (arrays: Float32Array[]): number[] => arrays.map((a) => {
    if (a.buffer !== memory.buffer) throw new Error('heapSimdHost: an array is not a view of the module memory');
    return a.byteOffset;
  });
  const host: SimdHost | null = simd === null ? null : {
    chunk: HEAP_CHUNK,
    get threads() {
      return countOf(threads);
    },
    inPlace: true,
    call: (inputs, outputs, run) => run(simd, addresses([...inputs, ...outputs])),
    callSplit: (inputs, outputs, plan) => runParts(simd, threads, plan(addresses([...inputs, ...outputs]), sharedParts(countOf(threads)))),
  };
  heapHosts.set(memory, host);
  return host;
}

let staging: SimdHost | null | undefined;

/** Pages a shared staging memory may grow to (its maximum is fixed when it is made): 1 GiB. */
const STAGING_MAX_PAGES = 16384;

/**
 * The loops on a private memory that arrays are copied through (one per process; shared with the host's threads
 * where there are several), or null without wasm SIMD.
 */
export function stagingSimdHost(): SimdHost | null {
  if (staging !== undefined) return staging;
  const memory = hostThreadsAvailable()
    ? new WebAssembly.Memory({ initial: 1, maximum: STAGING_MAX_PAGES, shared: true })
    : new WebAssembly.Memory({ initial: 1 });
  const simd = hostSimdFor(memory);
  if (simd === null) return (staging = null);
  const threads = hostSimdFor.threads(memory);
  const aligned = (n: number): number => Math.ceil((n * F32_BYTES) / V128_BYTES) * V128_BYTES;
  const staged = (inputs: Float32Array[], outputs: Float32Array[], run: (addresses: number[]) => void): void => {
    const at = new Map<Float32Array, number>();
    let end = 0;
    for (const a of [...inputs, ...outputs]) {
      if (at.has(a)) continue;
      at.set(a, end);
      end += aligned(a.length);
    }
    if (end > memory.buffer.byteLength) memory.grow(Math.ceil((end - memory.buffer.byteLength) / WASM_PAGE_BYTES));
    for (const a of inputs) new Float32Array(memory.buffer, at.get(a), a.length).set(a);
    run([...inputs, ...outputs].map((a) => at.get(a)!));
    for (const a of outputs) a.set(new Float32Array(memory.buffer, at.get(a), a.length));
  };
  staging = {
    chunk: STAGE_CHUNK,
    get threads() {
      return countOf(threads);
    },
    inPlace: false,
    call: (inputs, outputs, run) => staged(inputs, outputs, (addresses) => run(simd, addresses)),
    callSplit: (inputs, outputs, plan) => staged(inputs, outputs, (addresses) => runParts(simd, threads, plan(addresses, sharedParts(countOf(threads))))),
  };
  return staging;
}

/** Whole SIMD groups of n elements, in elements. */
const wholeGroups = (n: number): number => n - (n % LANES);

/** `groups` SIMD groups cut into runs for `threads` (threadParts), each given as (first group, groups) to `call`. */
const groupParts = (groups: number, threads: number, call: (first: number, count: number) => SimdCall[]): SimdCall[][] =>
  threadParts(groups, LANES, threads, call);

const V = V128_BYTES;

/**
 * Calls `f(a, b, rows)` for consecutive blocks of whole rows of H elements covering `elements`, each at most `chunk`
 * elements (at least one row): elements [a, b) are `rows` rows.
 */
function forRowBlocks(elements: number, H: number, chunk: number, f: (a: number, b: number, rows: number) => void): void {
  const rows = elements / H;
  const step = Math.max(1, Math.floor(chunk / H));
  for (let r = 0; r < rows; r += step) {
    const n = Math.min(step, rows - r);
    f(r * H, (r + n) * H, n);
  }
}

/** y = gelu(x) over the first wholeGroups(n) elements; returns that count (the caller does the rest). */
export function simdGelu(host: SimdHost, x: Float32Array, y: Float32Array): number {
  const n = wholeGroups(x.length);
  forRowBlocks(n, LANES, host.chunk, (a, b, groups) =>
    host.callSplit([x.subarray(a, b)], [y.subarray(a, b)], ([xa, ya], threads) =>
      groupParts(groups, threads, (g, n) => [{ fn: 'gelu', args: [xa! + g * V, ya! + g * V, n] }])));
  return n;
}

/** dx = dy * gelu'(x) over the first wholeGroups(n) elements; returns that count. */
export function simdGeluGrad(host: SimdHost, x: Float32Array, dy: Float32Array, dx: Float32Array): number {
  const n = wholeGroups(x.length);
  forRowBlocks(n, LANES, host.chunk, (a, b, groups) =>
    host.callSplit([x.subarray(a, b), dy.subarray(a, b)], [dx.subarray(a, b)], ([xa, dya, dxa], threads) =>
      groupParts(groups, threads, (g, n) => [{ fn: 'geluGrad', args: [xa! + g * V, dya! + g * V, dxa! + g * V, n] }])));
  return n;
}

/** out = a (op) b over the first wholeGroups(n) elements of equal-length arrays; returns that count. */
export function simdBinary(host: SimdHost, op: BinaryLoop, a: Float32Array, b: Float32Array, out: Float32Array): number {
  const n = wholeGroups(out.length);
  forRowBlocks(n, LANES, host.chunk, (p, q, groups) =>
    host.callSplit([a.subarray(p, q), b.subarray(p, q)], [out.subarray(p, q)], ([pa, pb, po], threads) =>
      groupParts(groups, threads, (g, n) => [{ fn: op, args: [pa! + g * V, pb! + g * V, po! + g * V, n] }])));
  return n;
}

/** kernels/dropout's dropout (keys k1, k2; float32 rate and scale) over the first wholeGroups(n) elements; returns that count. */
export function simdDropout(host: SimdHost, x: Float32Array, out: Float32Array, k1: number, k2: number, rate: number, scale: number): number {
  const n = wholeGroups(x.length);
  forRowBlocks(n, LANES, host.chunk, (a, b, groups) =>
    host.callSplit([x.subarray(a, b)], [out.subarray(a, b)], ([xa, oa], threads) => groupParts(groups, threads, (g, n) =>
      [{ fn: 'dropout', args: [xa! + g * V, oa! + g * V, n, a + g * LANES, k1 | 0, k2 | 0, rate, scale] }])));
  return n;
}

/** y = layerNorm(x [rows, H]) with H % SIMD_LANES == 0 (the caller checks). */
export function simdLayerNorm(host: SimdHost, x: Float32Array, gamma: Float32Array, beta: Float32Array, eps: number, y: Float32Array): void {
  const H = gamma.length;
  const rowBytes = H * F32_BYTES;
  forRowBlocks(x.length, H, host.chunk, (a, b, rows) =>
    host.callSplit([x.subarray(a, b), gamma, beta], [y.subarray(a, b)], ([xa, ga, ba, ya], threads) => threadParts(rows, H, threads, (r, n): SimdCall[] =>
      [{ fn: 'layerNorm', args: [xa! + r * rowBytes, ga!, ba!, ya! + r * rowBytes, n, H, eps] }])));
}

/** kernels/dropout's mask as the dropout loop takes it: keys, float32 rate and scale (rate 0, scale 1: x itself). */
export interface DropoutKeys {
  k1: number;
  k2: number;
  rate: number;
  scale: number;
}

/** Elements per array in one call of the fused residual loops: a few rows of each array stay in the core's cache between the passes. */
const FUSED_CHUNK = 1 << 16;
/** Blocks of FUSED_CHUNK a staged call of the residual LayerNorm takes, cut among the threads (the copies stay in cache). */
const FUSED_BLOCKS_A_CALL = 2;

/**
 * s = dropout(x) + residual and y = layerNorm(s) over rows of H (H % SIMD_LANES == 0, the caller checks), a few rows
 * at a time: the dropout loop (at the rows' flat indices) into s, the add loop in place, then the LayerNorm loop from
 * s into y: the loops and the order of the composed ops, so their bits.
 */
export function simdResidualLayerNorm(host: SimdHost, x: Float32Array, residual: Float32Array, gamma: Float32Array, beta: Float32Array,
  eps: number, drop: DropoutKeys, s: Float32Array, y: Float32Array): void {
  const H = gamma.length;
  const step = Math.max(1, Math.floor(FUSED_CHUNK / H)); // rows a block
  forRowBlocks(x.length, H, host.inPlace ? host.chunk : FUSED_CHUNK * FUSED_BLOCKS_A_CALL, (a, b, rows) =>
    host.callSplit([x.subarray(a, b), residual.subarray(a, b), gamma, beta], [s.subarray(a, b), y.subarray(a, b)], ([xa, ra, ga, ba, sa, ya], threads) =>
      threadParts(Math.ceil(rows / step), step * H, threads, (first, count) => {
        const calls: SimdCall[] = [];
        for (let r = first * step; r < Math.min(rows, (first + count) * step); r += step) {
          const n = Math.min(step, rows - r);
          const [o, groups] = [r * H * F32_BYTES, (n * H) / LANES];
          const [xo, so] = [xa! + o, sa! + o];
          calls.push(
            { fn: 'dropout', args: [xo, so, groups, a + r * H, drop.k1 | 0, drop.k2 | 0, drop.rate, drop.scale] },
            { fn: 'add', args: [so, ra! + o, so, groups] },
            { fn: 'layerNorm', args: [so, ga!, ba!, ya! + o, n, H, eps] },
          );
        }
        return calls;
      })));
}

/**
 * The gradients of simdResidualLayerNorm for dy, from its s: ds (the sum's, which is the residual's), dx =
 * dropout(ds) (the same mask), dgamma and dbeta (`scratch`: layerNormGradScratch(H, s.length) elements). Per block of
 * rows (layerNormGradBlocks): the LayerNorm gradient loop into ds, then the dropout loop from ds into dx.
 */
export function simdResidualLayerNormGrad(host: SimdHost, s: Float32Array, gamma: Float32Array, dy: Float32Array, eps: number,
  drop: DropoutKeys, ds: Float32Array, dx: Float32Array, dgamma: Float32Array, dbeta: Float32Array, scratch: Float32Array): void {
  layerNormGradBlocks(host, s, gamma, dy, eps, ds, { drop, dx }, dgamma, dbeta, scratch);
}

/**
 * Rows a block of the LayerNorm backward loops sums its columns over (each block its own float64 sums, added in
 * block order at the end): fixed by H alone, so the sums' bits do not depend on the threads or the staging chunks.
 */
const gradBlockRows = (H: number): number => Math.max(1, Math.floor(FUSED_CHUNK / H));

/**
 * The LayerNorm gradient loop over x [rows, H] into dx, and with `dropped` the dropout loop from dx into
 * dropped.dx after it, a block of gradBlockRows(H) rows at a time, the blocks cut among the threads. Each block
 * adds its dgamma and dbeta column sums into its own 2H float64 of `scratch`; dgamma and dbeta are those sums added
 * in block order (float64), rounded to float32.
 */
function layerNormGradBlocks(host: SimdHost, x: Float32Array, gamma: Float32Array, dy: Float32Array, eps: number, dx: Float32Array,
  dropped: { drop: DropoutKeys; dx: Float32Array } | null, dgamma: Float32Array, dbeta: Float32Array, scratch: Float32Array): void {
  const H = gamma.length;
  const rows = x.length / H;
  const blockRows = gradBlockRows(H);
  const blocks = Math.ceil(rows / blockRows);
  const accFloats = blockSumFloats(H);
  const acc = scratch.subarray(0, blocks * accFloats);
  acc.fill(0);
  const rowBytes = H * F32_BYTES;
  const blocksACall = host.inPlace ? blocks : FUSED_BLOCKS_A_CALL;
  for (let b0 = 0; b0 < blocks; b0 += blocksACall) {
    const b1 = Math.min(blocks, b0 + blocksACall);
    const [r0, r1] = [b0 * blockRows, Math.min(rows, b1 * blockRows)];
    const [a, b] = [r0 * H, r1 * H];
    const accs = acc.subarray(b0 * accFloats, b1 * accFloats);
    const outputs = [dx.subarray(a, b), accs, ...(dropped !== null ? [dropped.dx.subarray(a, b)] : [])];
    host.callSplit([x.subarray(a, b), gamma, dy.subarray(a, b), accs], outputs, ([xa, ga, dya, acca, dxa, , da], threads) =>
      threadParts(b1 - b0, blockRows * H, threads, (first, count) => {
        const calls: SimdCall[] = [];
        for (let j = first; j < first + count; j++) {
          const r = j * blockRows;
          const n = Math.min(blockRows, r1 - r0 - r);
          const o = r * rowBytes;
          calls.push({ fn: 'layerNormGrad', args: [xa! + o, ga!, dya! + o, dxa! + o, acca! + j * accFloats * F32_BYTES, n, H, eps] });
          if (dropped !== null) {
            const { k1, k2, rate, scale } = dropped.drop;
            calls.push({ fn: 'dropout', args: [dxa! + o, da! + o, (n * H) / LANES, a + r * H, k1 | 0, k2 | 0, rate, scale] });
          }
        }
        return calls;
      }));
  }
  const sums = new Float64Array(acc.slice().buffer); // a copy: the view may not be 8-byte aligned
  const total = new Float64Array(2 * H);
  for (let j = 0; j < blocks; j++) {
    for (let c = 0; c < 2 * H; c++) total[c]! += sums[j * 2 * H + c]!;
  }
  dgamma.set(total.subarray(0, H));
  dbeta.set(total.subarray(H));
}

/**
 * Rows of T elements of s (T >= SIMD_LANES, the caller checks) -> softmax(s * scale + mask) in place, where rows
 * [i * maskRows, (i + 1) * maskRows) take row i of `mask` ([.., T]): the attention's heads of one batch entry share its
 * key mask.
 */
export function simdSoftmaxRows(host: SimdHost, s: Float32Array, mask: Float32Array, T: number, maskRows: number, scale: number): void {
  const slab = maskRows * T; // one batch entry's rows, which share a mask row
  forRowBlocks(s.length, slab, host.chunk, (a, b, slabs) => {
    const i = a / slab;
    const rows = s.subarray(a, b); // one array read and written (staged once)
    host.callSplit([rows, mask.subarray(i * T, (i + slabs) * T)], [rows], ([sa, ma], threads) =>
      threadParts(slabs, slab, threads, (first, count) => Array.from({ length: count }, (_, j): SimdCall =>
        ({ fn: 'softmaxRows', args: [sa! + (first + j) * slab * F32_BYTES, ma! + (first + j) * T * F32_BYTES, maskRows, T, scale] }))));
  });
}

/** Rows of T elements of p (T >= SIMD_LANES) -> p * (dp - rowsum(dp * p)) in place. */
export function simdSoftmaxGradRows(host: SimdHost, p: Float32Array, dp: Float32Array, T: number): void {
  const rowBytes = T * F32_BYTES;
  forRowBlocks(p.length, T, host.chunk, (a, b, rows) => {
    const block = p.subarray(a, b); // one array read and written (staged once)
    host.callSplit([block, dp.subarray(a, b)], [block], ([pa, da], threads) => threadParts(rows, T, threads, (r, n): SimdCall[] =>
      [{ fn: 'softmaxGradRows', args: [pa! + r * rowBytes, da! + r * rowBytes, n, T] }]));
  });
}

/**
 * out [segments, inner] = the rows of x [ids.length, inner] summed by segment: out's row s is the sum, in order, of x's
 * rows i with ids[i] = s (zeros where there is none; ids outside [0, segments) dropped); inner % SIMD_LANES == 0 (the
 * caller checks). The segments are cut among the threads (each scans every id for its own), so each row's sum is
 * the one-thread loop's. In place only (the wasm heap: `ids` a view of it too).
 */
export function simdSegmentSum(host: SimdHost, x: Float32Array, ids: Int32Array, out: Float32Array, inner: number): void {
  const segments = out.length / inner;
  const rowBytes = inner * F32_BYTES;
  const idsAsF32 = new Float32Array(ids.buffer, ids.byteOffset, ids.length); // addressed like the float32 arrays
  host.callSplit([x, idsAsF32], [out], ([xa, ia, oa], threads) => threadParts(segments, inner, threads, (first, count) =>
    [{ fn: 'segmentSum', args: [xa!, ia!, oa!, ids.length, rowBytes, first, first + count] }]));
}

/** Float32 elements of one block's column sums in the LayerNorm backward loops: 2H float64 (dgamma, dbeta). */
const blockSumFloats = (H: number): number => (2 * H * F64_BYTES) / F32_BYTES;

/** Float32 elements of the scratch the LayerNorm backward loops need for x of `elements` elements and gamma of length H. */
export const layerNormGradScratch = (H: number, elements: number): number => Math.ceil(elements / H / gradBlockRows(H)) * blockSumFloats(H);

/**
 * dx, dgamma, dbeta of layerNorm(x [rows, H]) for dy, H % SIMD_LANES == 0; `scratch` (layerNormGradScratch(H, x.length)
 * elements) holds the blocks' float64 column sums (layerNormGradBlocks).
 */
export function simdLayerNormGrad(host: SimdHost, x: Float32Array, gamma: Float32Array, dy: Float32Array, eps: number,
  dx: Float32Array, dgamma: Float32Array, dbeta: Float32Array, scratch: Float32Array): void {
  layerNormGradBlocks(host, x, gamma, dy, eps, dx, null, dgamma, dbeta, scratch);
}
