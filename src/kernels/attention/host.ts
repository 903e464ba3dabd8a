/**
 * The cpu kernels of the attention op's split into heads (the op and the gradient: index.ts). Elements are copied as
 * int32 bits (a float copy could change a NaN's payload), one head row of dh elements at a time:
 *   MicseSplitHeads  qkv [B, T, 3H] -> q, k, v [B, nh, T, dh]: part p's head h of token t is qkv[b, t, p H + h dh ..)
 *   MicseMergeHeads  dq, dk, dv [B, nh, T, dh] -> dqkv [B, T, 3H], the same copies the other way
 */
import { tf } from '../../model/tf.js';
import { hostBits, makeHostOutput, type CpuBackend } from '../platform/hostBackend.js';
import { registerOp } from '../registry.js';
import { MERGE_HEADS, SPLIT_HEADS, SPLIT_HEADS_GRADIENTS, type HeadsAttrs } from './index.js';

/**
 * Calls `copy(rowAt, headAt, dh)` for every head row: rowAt its offset in the packed [B, T, 3H] array, headAt in
 * part p's [B, nh, T, dh] array, for p = 0, 1, 2 in turn (`part(p)` first).
 */
function headRows(B: number, T: number, nh: number, dh: number, part: (p: number) => void, copy: (rowAt: number, headAt: number) => void): void {
  const H = nh * dh;
  for (let p = 0; p < 3; p++) {
    part(p);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < nh; h++) {
        for (let t = 0; t < T; t++) copy((b * T + t) * 3 * H + p * H + h * dh, ((b * nh + h) * T + t) * dh);
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
  const src = hostBits(b, qkv);
  let dst = hostBits(b, outs[0]!);
  headRows(B, T, heads, dh, (p) => (dst = hostBits(b, outs[p]!)), (rowAt, headAt) => {
    for (let j = 0; j < dh; j++) dst[headAt + j] = src[rowAt + j]!;
  });
  return outs;
};

const mergeHeadsCpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as CpuBackend;
  const parts = [inputs['dq']!, inputs['dk']!, inputs['dv']!];
  const { heads } = attrs as unknown as HeadsAttrs;
  const [B, , T, dh] = parts[0]!.shape as [number, number, number, number];
  const out = makeHostOutput(b, [B, T, 3 * heads * dh], 'float32');
  const dst = hostBits(b, out);
  let src = hostBits(b, parts[0]!);
  headRows(B, T, heads, dh, (p) => (src = hostBits(b, parts[p]!)), (rowAt, headAt) => {
    for (let j = 0; j < dh; j++) dst[rowAt + j] = src[headAt + j]!;
  });
  return out;
};

/** Registers the split-into-heads kernels of `backendName` if it is cpu, and their gradient. */
export function registerAttentionHost(backendName: string): void {
  registerOp(backendName, { cpu: { [SPLIT_HEADS]: splitHeadsCpu, [MERGE_HEADS]: mergeHeadsCpu } }, SPLIT_HEADS_GRADIENTS);
}
