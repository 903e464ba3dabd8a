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

/** Registers the split-into-heads kernels of `backendName` if it is cpu, and their gradient. */
export function registerAttentionHost(backendName: string): void {
  registerOp(backendName, { cpu: { [SPLIT_HEADS]: splitHeadsCpu, [MERGE_HEADS]: mergeHeadsCpu } }, SPLIT_HEADS_GRADIENTS);
}
