/** The names, scalars and input check the AdamW kernels of every backend share. */
import { tf } from '../../model/tf.js';

export const ADAMW_KERNEL = 'MicseAdamW';
export const GRAD_NORM_KERNEL = 'MicseGradNorm';

/** torch's clip_grad_norm_ adds this to the norm before dividing. */
export const CLIP_EPS = 1e-6;

/** The per-step scalars of one update (plain numbers; rounded to float32 where they enter the arithmetic). */
export type AdamWStepScalars = {
  beta1: number;
  beta2: number;
  eps: number;
  /** 1 - lr * weightDecay, or 1 for a parameter without decay. */
  decay: number;
  /** sqrt(1 - beta2^t). */
  bc2Sqrt: number;
  /** lr / (1 - beta1^t). */
  stepSize: number;
  /** Clip to this norm; 0: no clipping (coef 1). */
  maxNorm: number;
};

export function assertFloat32(kernel: string, xs: readonly tf.TensorInfo[]): void {
  for (const x of xs) if (x.dtype !== 'float32') throw new Error(`${kernel}: float32 inputs only (got ${x.dtype})`);
}

/** One parameter's update: the variable, its gradient and moments, and the step's scalars. */
export interface InPlaceUpdate {
  p: tf.Variable;
  g: tf.Tensor;
  m: tf.Variable;
  v: tf.Variable;
  scalars: AdamWStepScalars;
}

/**
 * What an in-place update needs of its tensors on any backend: p, g, m and v float32 with the same non-zero element
 * count and four different dataIds; a gate one float32 apart from p, m and v. The backend's own conditions (who holds
 * the data) come on top (webgpu.ts canUpdateInPlace, host.ts canUpdateInPlaceCpu).
 */
export function inPlaceTensorsAllow(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, gate?: tf.Scalar): boolean {
  const xs = [p, g, m, v];
  if (p.size === 0 || xs.some((x) => x.dtype !== 'float32' || x.size !== p.size)) return false;
  if (new Set(xs.map((x) => x.dataId)).size !== xs.length) return false;
  return gate === undefined || (gate.dtype === 'float32' && gate.size === 1 && [p, m, v].every((x) => x.dataId !== gate.dataId));
}
