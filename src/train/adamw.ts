/**
 * AdamW (Loshchilov & Hutter) exactly as torch.optim.AdamW, which transformers' Trainer uses:
 *   p <- p - lr * wd * p                       (decoupled decay; skipped for biases and LayerNorm weights)
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * plus torch.nn.utils.clip_grad_norm_: g <- g * min(1, maxNorm / (||g||_2 + 1e-6)) over all gradients.
 * TF.js has no AdamW; its moments are plain variables here so checkpoints can save and restore them exactly.
 *
 * On cpu, wasm and webgpu the norm is one kernel over all gradients (src/kernels/adamw/index.ts). Each parameter's
 * update is one kernel on cpu and wasm (kernels/adamw) and one in-place dispatch on webgpu (kernels/adamw/webgpu.ts);
 * other backends (tensorflow, webgl), and webgpu parameters whose buffers are shared, compose the same arithmetic
 * from TF.js ops.
 */
import { tf } from '../model/tf.js';
import { CLIP_EPS, fusedAdamW, fusedGradNorm, fusedNormAvailable, fusedUpdateAvailable, type AdamWStepScalars } from '../kernels/adamw/index.js';
import { adamwInPlace, canUpdateInPlace, type InPlaceUpdate } from '../kernels/adamw/webgpu.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /**
   * `fused` (default): the fused kernels where the backend has them, else the composite ops; `composite`: always
   * the composite ops (the reference the fused kernels are tested against).
   */
  implementation?: 'fused' | 'composite';
}

export { CLIP_EPS };

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
    const { beta1, beta2, eps, weightDecay } = this.opts;
    const base = { beta1, beta2, eps, bc2Sqrt: Math.sqrt(1 - beta2 ** t), stepSize: lr / (1 - beta1 ** t), maxNorm };
    const scalars = (name: string): AdamWStepScalars => ({ ...base, decay: weightDecay > 0 && decays(name) ? 1 - lr * weightDecay : 1 });
    const fused = this.opts.implementation !== 'composite';
    const fusedNorm = fused && fusedNormAvailable();
    const fusedUpdate = fused && fusedUpdateAvailable();
    return tf.tidy(() => {
      const norm = fusedNorm ? fusedGradNorm([...grads.values()]) : compositeGradNorm([...grads.values()]);
      let coef: tf.Scalar | undefined; // the composite updates' clipping coefficient, made on first use
      let open: tf.Tensor | undefined; // and whether their gate lets them through (isFinite(gate)), likewise
      const inPlace: InPlaceUpdate[] = [];
      for (const p of this.params) {
        const g = grads.get(p.name);
        if (g === undefined) continue; // no gradient reached it this step
        const m = this.m.get(p.name)!;
        const v = this.v.get(p.name)!;
        if (fused && canUpdateInPlace(p.variable, g, m, v, gate)) {
          inPlace.push({ p: p.variable, g, m, v, scalars: scalars(p.name) });
          continue;
        }
        const [pNew, mNew, vNew] = fusedUpdate
          ? fusedAdamW(p.variable, g, m, v, norm, gate, scalars(p.name))
          : compositeAdamW(p.variable, tf.mul(g, (coef ??= compositeClipCoefficient(norm, maxNorm))), m, v, scalars(p.name),
            gate === undefined ? undefined : (open ??= tf.isFinite(gate)));
        m.assign(mNew);
        v.assign(vNew);
        p.variable.assign(pNew);
      }
      adamwInPlace(inPlace, norm, gate);
      return tf.keep(norm);
    });
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
 * ||grads||_2 from TF.js ops: one square and one sum per gradient, the sums added in order. (Not tf.addN: the webgpu
 * AddN binds every input in one shader and fails beyond 7 inputs, the default storage-buffer limit.)
 *   g_i (any shapes) -> []
 */
function compositeGradNorm(grads: tf.Tensor[]): tf.Scalar {
  const total = grads.map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b), tf.scalar(0));
  return tf.sqrt(total) as tf.Scalar;
}

/** min(1, maxNorm / (norm + CLIP_EPS)), or 1 without clipping.  [] -> [] */
function compositeClipCoefficient(norm: tf.Scalar, maxNorm: number): tf.Scalar {
  return maxNorm > 0 ? tf.minimum(1, tf.div(maxNorm, tf.add(norm, CLIP_EPS))) : tf.scalar(1);
}

/**
 * One update from TF.js ops (g already clipped), in the fused kernels' order: returns [p', m', v'], or p, m and v
 * where `open` (isFinite of the gate) is false.  all [S], open [] bool
 */
function compositeAdamW(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: AdamWStepScalars, open?: tf.Tensor): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const mNew = tf.add(tf.mul(m, s.beta1), tf.mul(g, 1 - s.beta1));
  const vNew = tf.add(tf.mul(v, s.beta2), tf.mul(tf.square(g), 1 - s.beta2));
  const w = s.decay === 1 ? p : tf.mul(p, s.decay);
  const denom = tf.add(tf.div(tf.sqrt(vNew), s.bc2Sqrt), s.eps);
  const updated: [tf.Tensor, tf.Tensor, tf.Tensor] = [tf.sub(w, tf.mul(tf.div(mNew, denom), s.stepSize)), mNew, vNew];
  if (open === undefined) return updated;
  return [tf.where(open, updated[0], p), tf.where(open, updated[1], m), tf.where(open, updated[2], v)];
}

/** Linear warmup then linear decay to 0 at `total` (or constant), as transformers' get_linear_schedule_with_warmup. */
export function learningRateAt(step: number, total: number, peak: number, warmup: number, schedule: 'linear' | 'constant'): number {
  if (warmup > 0 && step < warmup) return (peak * step) / warmup;
  if (schedule === 'constant') return peak;
  return peak * Math.max(0, (total - step) / Math.max(1, total - warmup));
}
