/**
 * The attention op's host kernels (the op, the kernels' contract and their gradients: index.ts).
 *
 * Where the host products run on the system's CBLAS (stock/host.ts `activeCblas`), cpu and wasm run the op as one
 * kernel and its gradient as one, every product one cblas_sgemm per (batch, head) on the blocks where they are
 * (Cblas.gemmGrid): head h of part p (0 q, 1 k, 2 v) of batch entry b is the T x dh block at qkv[b, 0, p H + h dh]
 * with rows 3H apart; the context's and dContext's head h the block at [b, 0, h dh] with rows H apart; no split, merge
 * or transpose.
 *   MicseAttention      S = q k^T per head into probs; per row: S * scale + mask, softmax (copied to undropped
 *                       where there is a dropout), then dropout over the whole [B, nh, T, T] (kernels/dropout's
 *                       loop: the same bits at the same flat index); then context = probs v
 *   MicseAttentionGrad  dP = dProbs (0 without it) + dContext v^T (scratch); dv = probs^T dContext into part 2 of dqkv;
 *                       P = undropped (or probs without dropout) copied to scratch, dP = dropout(dP) (the same
 *                       mask), per row dS = P * (dP - rowsum(dP * P)); dq = scale dS k into part 0, dk = scale dS^T q
 *                       into part 1
 * The scale, mask and softmax (and the softmax's gradient) run row by row in the WebAssembly SIMD loops of
 * hostSimd.ts where T >= 4 (float32 throughout, exp a polynomial within a few ulps); else (rows shorter than a vector) in JavaScript
 * loops with the cpu backend's composed ops' arithmetic (a product rounded, times the float32 scale rounded, plus the
 * mask rounded; exp in float64 rounded, the row's float64 sum rounded, a float32 division).
 *
 * Without CBLAS (MLAS, or MICSE_NATIVE_GEMM=0) the op runs its composed ops; on cpu the split into heads is then one
 * kernel. Elements are copied as int32 bits (a float copy could change a NaN's payload), one head row of dh
 * elements at a time:
 *   MicseSplitHeads  qkv [B, T, 3H] -> q, k, v [B, nh, T, dh]: part p's head h of token t is qkv[b, t, p H + h dh ..)
 *   MicseMergeHeads  dq, dk, dv [B, nh, T, dh] -> dqkv [B, T, 3H], the same copies the other way
 */
import { tf } from '../../model/tf.js';
import { dropoutInto } from '../dropout/host.js';
import type { Cblas, GridOperand } from '../platform/cblas.js';
import { hostBits, makeHostOutput, type CpuBackend } from '../platform/hostBackend.js';
import { cpuIO, wasmIO, type HostIO } from '../platform/hostIO.js';
import { SIMD_LANES, simdSoftmaxGradRows, simdSoftmaxRows, type SimdHost } from '../platform/hostSimd.js';
import { registerOp } from '../registry.js';
import { activeCblas } from '../stock/host.js';
import {
  ATTENTION, ATTENTION_GRAD, ATTENTION_GRADIENTS, dimsOf, MERGE_HEADS, SPLIT_HEADS, SPLIT_HEADS_GRADIENTS, type Dims,
  type HeadsAttrs, type ProbsAttrs,
} from './index.js';

/** The active CBLAS; the kernels run only where there is one (their `when`), so its absence here is a caller's error. */
function cblas(): Cblas {
  const gemm = activeCblas();
  if (gemm === undefined) throw new Error('selfAttention: the host attention kernels need the CBLAS engine, which is not active');
  return gemm;
}

/** The (batch, head) grid of every product. */
const grid = (d: Dims): [number, number] => [d.B, d.nh];

/** Part p (0 q, 1 k, 2 v) of qkv [B, T, 3H] per (batch, head): T x dh blocks, rows 3H apart. */
const packedPart = (data: Float32Array, d: Dims, p: number): GridOperand =>
  ({ data, offset: p * d.H, ld: 3 * d.H, step: [d.T * 3 * d.H, d.dh] });
/** A [B, T, H] array (context, dContext) per (batch, head): T x dh blocks, rows H apart. */
const headsOf = (data: Float32Array, d: Dims): GridOperand => ({ data, offset: 0, ld: d.H, step: [d.T * d.H, d.dh] });
/** A [B, nh, T, T] array per (batch, head): dense T x T blocks. */
const squareOf = (data: Float32Array, d: Dims): GridOperand => ({ data, offset: 0, ld: d.T, step: [d.nh * d.T * d.T, d.T * d.T] });

/** The SIMD loops for rows of T elements: the host's where it has them and a row holds one vector of their lanes, else null. */
const rowsSimd = (host: HostIO, T: number): SimdHost | null => (T >= SIMD_LANES ? host.simd : null);

/**
 * s [B, nh, T, T] (q k^T per head) -> softmax(s * scale + mask) row by row, in place; mask [B, 1, 1, T]. A fully
 * padded row (every key float32's lowest) has equal scores, so uniform probabilities. The SIMD loop where `simd`
 * (rowsSimd) is given, else the JavaScript loop (module comment).
 */
function softmaxRows(s: Float32Array, mask: Float32Array, d: Dims, scale: number, simd: SimdHost | null): void {
  const { T, nh } = d;
  if (simd !== null) {
    simdSoftmaxRows(simd, s, mask, T, nh * T, Math.fround(scale));
    return;
  }
  const sc = Math.fround(scale);
  for (let z = 0; z < d.z; z++) {
    const m = ((z / nh) | 0) * T; // this batch entry's mask row
    for (let row = z * T * T; row < (z + 1) * T * T; row += T) {
      let max = -Infinity;
      for (let j = 0; j < T; j++) {
        const v = Math.fround(Math.fround(s[row + j]! * sc) + mask[m + j]!);
        s[row + j] = v;
        if (v > max) max = v;
      }
      let sum = 0;
      for (let j = 0; j < T; j++) {
        const e = Math.fround(Math.exp(s[row + j]! - max));
        s[row + j] = e;
        sum += e;
      }
      const total = Math.fround(sum);
      for (let j = 0; j < T; j++) s[row + j] = s[row + j]! / total;
    }
  }
}

/** p [B, nh, T, T] (the undropped probabilities) -> dS = p * (dp - rowsum(dp * p)) row by row, in place. */
function softmaxGradRows(p: Float32Array, dp: Float32Array, T: number, simd: SimdHost | null): void {
  if (simd !== null) {
    simdSoftmaxGradRows(simd, p, dp, T);
    return;
  }
  for (let row = 0; row < p.length; row += T) {
    let dot = 0;
    for (let j = 0; j < T; j++) dot += dp[row + j]! * p[row + j]!;
    const d = Math.fround(dot);
    for (let j = 0; j < T; j++) p[row + j] = p[row + j]! * (dp[row + j]! - d);
  }
}

/** The op's two kernels on the host backend whose tensors `io` reads and makes. */
function attentionKernels(io: (backend: unknown) => HostIO): Record<string, tf.KernelFunc> {
  return {
    [ATTENTION]: ({ inputs, backend, attrs }) => {
      const { qkv, mask } = inputs as { qkv: tf.TensorInfo; mask: tf.TensorInfo };
      const a = attrs as unknown as ProbsAttrs;
      const d = dimsOf(qkv.shape, a.heads);
      const host = io(backend);
      const gemm = cblas();
      const square = [d.B, d.nh, d.T, d.T];
      return host.outputs([[d.B, d.T, d.H], square, a.rate > 0 ? square : [0]], ([context, probs, undropped]) => {
        const x = host.read(qkv); // [B, T, 3H]
        gemm.gemmGrid(grid(d), false, true, d.T, d.T, d.dh, 1, packedPart(x, d, 0), packedPart(x, d, 1), squareOf(probs!, d));
        softmaxRows(probs!, host.read(mask), d, a.scale, rowsSimd(host, d.T));
        if (a.rate > 0) {
          undropped!.set(probs!);
          dropoutInto(probs!, probs!, a.rate, a.seed, host.simd);
        }
        gemm.gemmGrid(grid(d), false, false, d.T, d.dh, d.T, 1, squareOf(probs!, d), packedPart(x, d, 2), headsOf(context!, d));
      });
    },
    [ATTENTION_GRAD]: ({ inputs, backend, attrs }) => {
      const { qkv, probs, undropped, dContext, dProbs } = inputs as Record<'qkv' | 'probs' | 'undropped' | 'dContext', tf.TensorInfo> &
        { dProbs?: tf.TensorInfo };
      const a = attrs as unknown as ProbsAttrs;
      const d = dimsOf(qkv.shape, a.heads);
      const host = io(backend);
      const gemm = cblas();
      const n = d.z * d.T * d.T;
      // scratch: the probabilities' whole gradient, then a copy of P (the softmax's gradient overwrites it)
      return host.outputs([qkv.shape], ([dqkv], scratch) => {
        const x = host.read(qkv); // [B, T, 3H]
        const dc = headsOf(host.read(dContext), d);
        // dProbs (what read the probabilities, e.g. the AMI; zeros where nothing did) + dContext v^T
        const dp = scratch.subarray(0, n); // [B, nh, T, T]
        if (dProbs !== undefined) dp.set(host.read(dProbs));
        else dp.fill(0);
        gemm.gemmGrid(grid(d), false, true, d.T, d.T, d.dh, 1, dc, packedPart(x, d, 2), squareOf(dp, d), 1);
        // dv = probs^T dContext
        gemm.gemmGrid(grid(d), true, false, d.T, d.dh, d.T, 1, squareOf(host.read(probs), d), dc, packedPart(dqkv!, d, 2));
        // P, the probabilities before the dropout; through the dropout, dP = dropout(dp) (the same mask)
        const p = scratch.subarray(n, 2 * n); // [B, nh, T, T]
        p.set(host.read(a.rate > 0 ? undropped : probs));
        if (a.rate > 0) dropoutInto(dp, dp, a.rate, a.seed, host.simd);
        softmaxGradRows(p, dp, d.T, rowsSimd(host, d.T)); // p holds dS now
        gemm.gemmGrid(grid(d), false, false, d.T, d.dh, d.T, a.scale, squareOf(p, d), packedPart(x, d, 1), packedPart(dqkv!, d, 0));
        gemm.gemmGrid(grid(d), true, false, d.T, d.dh, d.T, a.scale, squareOf(p, d), packedPart(x, d, 0), packedPart(dqkv!, d, 1));
      }, 2 * n)[0]!;
    },
  };
}

/**
 * Copies every head row between the packed array (qkv [B, T, 3H]) and the three parts' head arrays (q, k, v
 * [B, nh, T, dh]): `toHeads` from packed into the parts, else back. Token by token, so the packed side is walked in
 * order; each head row of dh elements a plain loop.
 */
function copyHeads(packed: Int32Array, parts: readonly Int32Array[], B: number, T: number, nh: number, dh: number, toHeads: boolean): void {
  const H = nh * dh;
  for (let p = 0; p < 3; p++) {
    const part = parts[p]!;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const row = (b * T + t) * 3 * H + p * H; // part p of token t's row
        for (let h = 0; h < nh; h++) {
          const at = row + h * dh;
          const head = ((b * nh + h) * T + t) * dh;
          if (toHeads) for (let j = 0; j < dh; j++) part[head + j] = packed[at + j]!;
          else for (let j = 0; j < dh; j++) packed[at + j] = part[head + j]!;
        }
      }
    }
  }
}

const splitHeadsCpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as CpuBackend;
  const qkv = inputs['qkv']!;
  const { heads } = attrs as unknown as HeadsAttrs;
  const [B, T, H3] = qkv.shape as [number, number, number];
  const dh = H3 / 3 / heads;
  const outs = [0, 1, 2].map(() => makeHostOutput(b, [B, heads, T, dh], 'float32'));
  copyHeads(hostBits(b, qkv), outs.map((o) => hostBits(b, o)), B, T, heads, dh, true);
  return outs;
};

const mergeHeadsCpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as CpuBackend;
  const parts = [inputs['dq']!, inputs['dk']!, inputs['dv']!];
  const { heads } = attrs as unknown as HeadsAttrs;
  const [B, , T, dh] = parts[0]!.shape as [number, number, number, number];
  const out = makeHostOutput(b, [B, T, 3 * heads * dh], 'float32');
  copyHeads(hostBits(b, out), parts.map((x) => hostBits(b, x)), B, T, heads, dh, false);
  return out;
};

/**
 * Registers the attention kernels of `backendName` if it is cpu or wasm (run while CBLAS is the host products'
 * engine), the split-into-heads kernels if it is cpu, and their gradients.
 */
export function registerAttentionHost(backendName: string): void {
  registerOp(backendName, { cpu: attentionKernels(cpuIO), wasm: attentionKernels(wasmIO) }, ATTENTION_GRADIENTS,
    () => activeCblas() !== undefined);
  registerOp(backendName, { cpu: { [SPLIT_HEADS]: splitHeadsCpu, [MERGE_HEADS]: mergeHeadsCpu } }, SPLIT_HEADS_GRADIENTS);
}
