/**
 * AdamW (Loshchilov & Hutter) in one of two variants (`variant`):
 * - `torch`: torch.optim.AdamW (transformers' `optim: adamw_torch`, the Trainer's default in later releases):
 *     p <- p - lr * wd * p                       (decoupled decay; skipped for biases and LayerNorm weights)
 *     m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *     p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * - `hf`: transformers.AdamW (`optim: adamw_hf`, the Trainer's default up to 4.x, as in transformers 4.22 which
 *   miCSE's and SimCSE's runs used): the same moments, then
 *     p <- p - (lr * sqrt(1 - b2^t) / (1 - b1^t)) * m / (sqrt(v) + eps);  p <- p - lr * wd * p   (decay after)
 *   eps is added to sqrt(v) before the bias correction rather than after, and the decay multiplies the updated p.
 * Both are the kernels' one update p' = p * decay - (m / (sqrt(v) / bc2Sqrt + eps)) * stepSize with host-side
 * scalars (float64, as Python computes them): `hf` is bc2Sqrt = 1, stepSize = decay * lr sqrt(1 - b2^t) / (1 - b1^t)
 * (the decay after the update, folded into the step size: (p - s u) d = p d - (s d) u).
 * Both clip as torch.nn.utils.clip_grad_norm_: g <- g * min(1, maxNorm / (||g||_2 + 1e-6)) over all gradients.
 * TF.js has no AdamW; its moments are plain variables here so checkpoints can save and restore them exactly.
 *
 * The update itself is the op `adamwUpdate` (src/kernels/adamw): kernels where the backend has them, the same
 * arithmetic composed from TF.js ops elsewhere.
 */
import { tf } from '../model/tf.js';
import { loggingStepValues, noteStepValue, type StepRoots } from '../kernels/replay/index.js';
import { adamwUpdate, type AdamWStepScalars, type ParamUpdate } from '../kernels/adamw/index.js';
import { DEFAULT_ADAMW_VARIANT, type AdamWVariant } from './adamwVariants.js';

export type { AdamWVariant };

export interface AdamWOptions {
  /** Default `torch`. */
  variant?: AdamWVariant;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

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
      // tf.variable shares the initial tensor's data: dispose it, so the moment is the sole owner (in-place updates).
      const zeros = (): tf.Variable => tf.tidy(() => tf.variable(tf.zerosLike(p.variable), false));
      this.m.set(p.name, zeros());
      this.v.set(p.name, zeros());
    }
  }

  /**
   * Clips `grads` (keyed by parameter name) to `maxNorm` (0: no clipping) and applies one update at `lr`.
   * Returns the gradient norm before clipping (a scalar tensor the caller disposes).
   *
   * With a `gate` (the step's loss) the update is made only if the gate is finite, decided where the update runs,
   * so the caller need not read the loss first (on a GPU that read would leave the device idle while the update is
   * recorded). The step still counts as taken; a caller that then finds the gate non-finite calls `revertStep`.
   */
  apply(grads: Map<string, tf.Tensor>, lr: number, maxNorm: number, gate?: tf.Scalar): tf.Scalar {
    this.step += 1;
    const t = this.step;
    const scalars = this.scalarsAt(lr, t, maxNorm);
    if (loggingStepValues()) this.noteStepValues(lr, t, maxNorm);
    const updates: ParamUpdate[] = [];
    for (const p of this.params) {
      const g = grads.get(p.name);
      if (g === undefined) continue; // no gradient reached it this step
      updates.push({ p: p.variable, g, m: this.m.get(p.name)!, v: this.v.get(p.name)!, scalars: scalars(decays(p.name)) });
    }
    return adamwUpdate(updates, [...grads.values()], maxNorm, gate);
  }

  /**
   * Notes the update scalars that reach the GPU, with their formulas from the step's roots (kernels/replay:
   * a replayed step writes them without running `apply`).
   */
  private noteStepValues(lr: number, t: number, maxNorm: number): void {
    for (const decayed of [false, true]) {
      const s = this.scalarsAt(lr, t, maxNorm)(decayed);
      for (const field of ['stepSize', 'bc2Sqrt', 'decay'] as const) {
        noteStepValue(`adamw.${field}.${decayed ? 'decayed' : 'plain'}`, s[field], 'f32', (r: StepRoots) => this.scalarsAt(r.lr, r.t, maxNorm)(decayed)[field]);
      }
    }
  }

  /** The update scalars at `lr` and step `t`, for a parameter with weight decay (`decayed`) or without. */
  private scalarsAt(lr: number, t: number, maxNorm: number): (decayed: boolean) => AdamWStepScalars {
    const { beta1, beta2, eps, weightDecay } = this.opts;
    const scalars = stepScalars(this.opts.variant ?? DEFAULT_ADAMW_VARIANT, { lr, t, beta1, beta2, eps, maxNorm });
    return (decayed) => scalars(decayed && weightDecay > 0 ? 1 - lr * weightDecay : 1);
  }

  /** The last `apply` was gated off (its gate was not finite): it does not count as a step (bias correction). */
  revertStep(): void {
    if (this.step === 0) throw new Error('AdamW.revertStep: no step to revert');
    this.step -= 1;
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}

/**
 * The update scalars of step `t` for a parameter whose decay factor is `decay` (1 - lr * wd, or 1), per variant;
 * see the module comment. Computed in float64; the kernels round them to float32.
 */
export function stepScalars(variant: AdamWVariant, o: { lr: number; t: number; beta1: number; beta2: number; eps: number; maxNorm: number }):
  (decay: number) => AdamWStepScalars {
  const { lr, t, beta1, beta2, eps, maxNorm } = o;
  const bc1 = 1 - beta1 ** t;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** t);
  if (variant === 'hf') {
    const stepSize = (lr * bc2Sqrt) / bc1;
    return (decay) => ({ beta1, beta2, eps, maxNorm, bc2Sqrt: 1, stepSize: stepSize * decay, decay });
  }
  return (decay) => ({ beta1, beta2, eps, maxNorm, bc2Sqrt, stepSize: lr / bc1, decay });
}

/** Linear warmup then linear decay to 0 at `total` (or constant), as transformers' get_linear_schedule_with_warmup. */
export function learningRateAt(step: number, total: number, peak: number, warmup: number, schedule: 'linear' | 'constant'): number {
  if (warmup > 0 && step < warmup) return (peak * step) / warmup;
  if (schedule === 'constant') return peak;
  return peak * Math.max(0, (total - step) / Math.max(1, total - warmup));
}
