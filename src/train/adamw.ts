/**
 * AdamW (Loshchilov & Hutter) exactly as torch.optim.AdamW, which transformers' Trainer uses:
 *   p <- p - lr * wd * p                       (decoupled decay; skipped for biases and LayerNorm weights)
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * plus torch.nn.utils.clip_grad_norm_: g <- g * min(1, maxNorm / (||g||_2 + 1e-6)) over all gradients.
 * TF.js has no AdamW; its moments are plain variables here so checkpoints can save and restore them exactly.
 */
import { tf } from '../model/tf.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** torch's clip_grad_norm_ adds this to the norm before dividing. */
export const CLIP_EPS = 1e-6;

/** transformers' rule: no weight decay for biases and LayerNorm weights. */
export function decays(name: string): boolean {
  return !(name.endsWith('.bias') || name.includes('LayerNorm.'));
}

export interface NamedParam {
  name: string;
  variable: tf.Variable;
}

export class AdamW {
  /** Optimiser steps taken (t). */
  step = 0;
  readonly m: Map<string, tf.Variable> = new Map();
  readonly v: Map<string, tf.Variable> = new Map();

  constructor(readonly params: NamedParam[], readonly opts: AdamWOptions) {
    for (const p of params) {
      this.m.set(p.name, tf.variable(tf.zerosLike(p.variable), false));
      this.v.set(p.name, tf.variable(tf.zerosLike(p.variable), false));
    }
  }

  /**
   * Clips `grads` (keyed by parameter name) to `maxNorm` (0: no clipping) and applies one update at `lr`.
   * Returns the gradient norm before clipping (a scalar tensor the caller disposes).
   */
  apply(grads: Map<string, tf.Tensor>, lr: number, maxNorm: number): tf.Scalar {
    this.step += 1;
    const t = this.step;
    const { beta1: b1, beta2: b2, eps, weightDecay } = this.opts;
    const bc1 = 1 - b1 ** t;
    const bc2Sqrt = Math.sqrt(1 - b2 ** t);
    return tf.tidy(() => {
      const norm = tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))) as tf.Scalar;
      const coef = maxNorm > 0 ? tf.minimum(1, tf.div(maxNorm, tf.add(norm, CLIP_EPS))) : tf.scalar(1);
      for (const p of this.params) {
        const gRaw = grads.get(p.name);
        if (gRaw === undefined) continue; // no gradient reached it this step
        const g = tf.mul(gRaw, coef);
        const m = this.m.get(p.name)!;
        const v = this.v.get(p.name)!;
        m.assign(tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1)));
        v.assign(tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2)));
        let w: tf.Tensor = p.variable;
        if (weightDecay > 0 && decays(p.name)) w = tf.mul(w, 1 - lr * weightDecay);
        const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), eps);
        p.variable.assign(tf.sub(w, tf.mul(tf.div(m, denom), lr / bc1)));
      }
      return tf.keep(norm);
    });
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}

/** Linear warmup then linear decay to 0 at `total` (or constant), as transformers' get_linear_schedule_with_warmup. */
export function learningRateAt(step: number, total: number, peak: number, warmup: number, schedule: 'linear' | 'constant'): number {
  if (warmup > 0 && step < warmup) return (peak * step) / warmup;
  if (schedule === 'constant') return peak;
  return peak * Math.max(0, (total - step) / Math.max(1, total - warmup));
}
