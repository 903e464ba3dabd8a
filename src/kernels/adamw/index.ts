/**
 * The AdamW update op (the method is src/train/adamw.ts, which computes the step's scalars and calls `adamwUpdate`):
 *
 *   MicseGradNorm  inputs g0..gk (any shapes)  -> [] ||(g0, .., gk)||_2                    cpu, wasm, webgpu
 *   MicseAdamW     inputs p, g, m, v (shape S), norm [], [gate []]  -> [p', m', v'] (shape S each)   cpu, wasm
 *                  (with a gate that is not finite the outputs are p, m and v unchanged)
 * plus the in-place updates (p, m and v written where they are): on webgpu webgpu.ts's, several parameters a
 * dispatch; on cpu host.ts's, the kernel's arithmetic on arrays an earlier update made; on wasm host.ts's, every
 * parameter's SIMD loop in one job of the heap's threads. The kernel runs for parameters that cannot be updated in
 * place (shared buffers; on cpu, a parameter's first update); the composite
 * TF.js ops below everywhere else (tensorflow, webgl). The kernels' arithmetic and why they exist: host.ts; the
 * in-place updates: webgpu.ts and host.ts.
 */
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';
import { ADAMW_KERNEL, CLIP_EPS, GRAD_NORM_KERNEL, type AdamWStepScalars, type InPlaceUpdate } from './scalars.js';
import { adamwInPlaceCpu, adamwInPlaceWasm, canUpdateInPlaceCpu, canUpdateInPlaceWasm } from './host.js';
import { adamwInPlace, canUpdateInPlace } from './webgpu.js';

export { CLIP_EPS, type AdamWStepScalars };

/** One parameter's update: the variable, its gradient and moments, and the step's scalars. */
export type ParamUpdate = InPlaceUpdate;

/** A backend's in-place update: which updates it can take, and the update of those. */
interface InPlaceUpdater {
  can(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, gate?: tf.Scalar): boolean;
  apply(updates: readonly InPlaceUpdate[], norm: tf.Scalar, gate?: tf.Scalar): void;
}

const IN_PLACE: Readonly<Record<string, InPlaceUpdater>> = {
  webgpu: { can: canUpdateInPlace, apply: adamwInPlace },
  cpu: { can: canUpdateInPlaceCpu, apply: adamwInPlaceCpu },
  wasm: { can: canUpdateInPlaceWasm, apply: adamwInPlaceWasm },
};

/**
 * Clips the gradients to `maxNorm` (0: no clipping) by their norm over `grads` and applies each of `updates`,
 * assigning p, m and v; with a `gate` that is not finite nothing changes. Returns the norm before clipping (a scalar
 * the caller disposes).
 */
export function adamwUpdate(updates: readonly ParamUpdate[], grads: readonly tf.Tensor[], maxNorm: number, gate: tf.Scalar | undefined): tf.Scalar {
  const fusedNorm = kernelOn(GRAD_NORM_KERNEL);
  const fusedUpdate = kernelOn(ADAMW_KERNEL);
  const inPlaceOn = IN_PLACE[tf.getBackend()];
  return tf.tidy(() => {
    const norm = fusedNorm ? fusedGradNorm(grads) : compositeGradNorm(grads);
    let coef: tf.Scalar | undefined; // the composite updates' clipping coefficient, made on first use
    let open: tf.Tensor | undefined; // and whether their gate lets them through (isFinite(gate)), likewise
    const inPlace: InPlaceUpdate[] = [];
    for (const u of updates) {
      const { p, g, m, v, scalars } = u;
      if (inPlaceOn?.can(p, g, m, v, gate) === true) {
        inPlace.push(u);
        continue;
      }
      const [pNew, mNew, vNew] = fusedUpdate
        ? fusedAdamW(p, g, m, v, norm, gate, scalars)
        : compositeAdamW(p, tf.mul(g, (coef ??= compositeClipCoefficient(norm, maxNorm))), m, v, scalars,
          gate === undefined ? undefined : (open ??= tf.isFinite(gate)));
      m.assign(mNew);
      v.assign(vNew);
      p.assign(pNew);
    }
    inPlaceOn?.apply(inPlace, norm, gate);
    return tf.keep(norm);
  });
}

/** ||grads||_2 over all `grads` in one kernel (where the backend has it).  g_i (any shapes) -> [] */
export function fusedGradNorm(grads: readonly tf.Tensor[]): tf.Scalar {
  const inputs: tf.NamedTensorMap = {};
  grads.forEach((g, i) => (inputs[`g${i}`] = g));
  return tf.engine().runKernel(GRAD_NORM_KERNEL, inputs) as tf.Scalar;
}

/**
 * One AdamW update of one parameter: returns [p', m', v'], each shaped like p; with a `gate` that is not finite,
 * p, m and v unchanged.  p, g, m, v [S], norm [], gate []
 */
function fusedAdamW(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, norm: tf.Scalar, gate: tf.Scalar | undefined,
  s: AdamWStepScalars): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const inputs: tf.NamedTensorMap = { p, g, m, v, norm };
  if (gate !== undefined) inputs.gate = gate;
  return tf.engine().runKernel(ADAMW_KERNEL, inputs, { ...s }) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/**
 * ||grads||_2 from TF.js ops: one square and one sum per gradient, the sums added in order. (Not tf.addN: the webgpu
 * AddN binds every input in one shader and fails beyond 7 inputs, the default storage-buffer limit.)
 *   g_i (any shapes) -> []
 */
function compositeGradNorm(grads: readonly tf.Tensor[]): tf.Scalar {
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
