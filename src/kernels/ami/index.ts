/**
 * The attention MI (AMI) ops of the miCSE regulariser (the method: src/losses/attentionMI.ts), each running the AMI
 * kernels where the backend has them (webgpu.ts: the whole term in 6 dispatches forward and 1 backward; host.ts: the
 * same kernels as loops on cpu and wasm) and the stock ops elsewhere:
 *   drawPositions(valid [R, N], samples, seed) -> int32 [R, samples]   the seeded uniform draw among valid positions
 *   attentionMI(attentions [2B, L, H, T, T], args, composed) -> [value [], drawn [2]]   the whole term; `composed` is
 *     the method's own stock ops, run where the kernels do not take the arguments
 * The kernels compute the same draw (positions and order) and the same arithmetic within float32 rounding.
 */
import { detached, tf } from '../../model/tf.js';
import { seededUniform } from '../dropout/index.js';
import { kernelOn } from '../registry.js';

/** The kernels' names (registered by the backend files: webgpu.ts, host.ts). */
export const COUNTS = 'MicseAmiCounts';
export const PLAN = 'MicseAmiPlan';
export const DRAW = 'MicseAmiDraw';
export const MI = 'MicseAmiMI';
export const VALUE = 'MicseAmiValue';
export const GRAD = 'MicseAmiGrad';
export const DRAWN = 'MicseAmiDrawn';
/**
 * The host's MI and gradient pair: MicseAmiMIStats gives mi and each row's statistics ([R, AMI_STATS_HEAD + 2S]
 * float32: Qx, Qy, P, nx, ny, rho, its clamp r, q, then the centred logs cx and cy of the samples), which
 * MicseAmiGradStats reads instead of computing them again from the attentions.
 */
export const MI_STATS = 'MicseAmiMIStats';
export const GRAD_STATS = 'MicseAmiGradStats';
/** Scalars before a row's centred logs in MI_STATS's statistics. */
export const AMI_STATS_HEAD = 8;

/** Largest S the draw kernel takes (its compacted draw: 2 * 4 bytes per sample of workgroup memory). */
export const AMI_DRAW_MAX_SAMPLES = 1024;

/** The kernels' attributes. */
export interface DrawAttrs {
  samples: number;
  seed: number;
}
export interface PlanAttrs {
  targetSamples: number;
  scaleEps: number;
  /** Columns of the regrouped matrices (the scale's denominator). */
  N: number;
}
export interface MIAttrs {
  cosineEps: number;
  rhoEps: number;
  nanValue: number;
}

/** Dimensions of `attentions [2B, L, H, T, T]` and of its regrouped `[R, N]` matrices (checked by attentionMI.ts). */
export function dims(attentions: tf.TensorInfo): { L: number; H: number; TT: number; R: number; N: number } {
  const [twoB, L, H, T] = attentions.shape as [number, number, number, number, number];
  return { L, H, TT: T * T, R: twoB * H, N: (L / 2) * T * T };
}

// ---------------------------------------------------------------------------------------------------------------
// The kernels' steps
// ---------------------------------------------------------------------------------------------------------------

function run(kernelName: string, inputs: tf.NamedTensorMap, attrs: object = {}): tf.Tensor {
  return tf.engine().runKernel(kernelName, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/** rankSamplePositions of `valid [R, N]` (bool) with `samples <= AMI_DRAW_MAX_SAMPLES`: int32 [R, samples]. */
function drawFromMask(valid: tf.Tensor2D, samples: number, seed: number): tf.Tensor2D {
  return run(DRAW, { valid }, { samples, seed }) as tf.Tensor2D;
}

/** The same draw with the valid mask of `attentions [2B, L, H, T, T]` (float32): int32 [R, samples]. */
function drawFromAttention(attentions: tf.Tensor, samples: number, seed: number): tf.Tensor2D {
  return run(DRAW, { attentions }, { samples, seed }) as tf.Tensor2D;
}

/** planRows of the valid counts of `attentions`: `[rowMask (R), rows, samples, scale]` float32 [R + 3]. */
function attentionRowPlan(attentions: tf.Tensor, targetSamples: number, scaleEps: number): tf.Tensor1D {
  return tf.tidy(() => {
    const counts = run(COUNTS, { attentions }); // [R]
    return run(PLAN, { counts }, { targetSamples, scaleEps, N: dims(attentions).N }) as tf.Tensor1D;
  });
}

/** int32 [rows, samples] of a plan. */
function drawnOfPlan(plan: tf.Tensor1D): tf.Tensor1D {
  return run(DRAWN, { plan }) as tf.Tensor1D;
}

/**
 * The AMI value (scalar) of `attentions` (float32) at the drawn `positions [R, S]` (int32) under `plan [R + 3]`,
 * differentiable in `attentions` (positions and plan are constants).
 */
function attentionMIValue(attentions: tf.Tensor, positions: tf.Tensor2D, plan: tf.Tensor1D, attrs: MIAttrs): tf.Scalar {
  const withStats = kernelOn(MI_STATS, attentions);
  const op = tf.customGrad((a, save) => {
    const x = a as tf.Tensor;
    const [mi, stats] = withStats
      ? tf.engine().runKernel(MI_STATS, { attentions: x, positions, plan }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[] // [R], [R, W]
      : [run(MI, { attentions: x, positions, plan }, attrs)]; // [R]
    const value = tf.reshape(run(VALUE, { mi: mi!, plan }, attrs), []) as tf.Scalar;
    (save as tf.GradSaveFunc)([x, positions, plan, mi!, ...(stats === undefined ? [] : [stats])]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sa, sp, splan, smi, sstats] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | undefined];
        return sstats === undefined
          ? run(GRAD, { attentions: sa, positions: sp, plan: splan, mi: smi, dy }, attrs)
          : run(GRAD_STATS, { attentions: sa, positions: sp, plan: splan, mi: smi, stats: sstats, dy }, attrs);
      },
    };
  });
  return op(attentions) as tf.Scalar;
}

// ---------------------------------------------------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------------------------------------------------

/**
 * For each row of `valid [R, N]` (bool), `samples` (1..N) distinct positions drawn uniformly among its valid ones, in
 * draw order (src/losses/attentionMI.ts rankSamplePositions): seeded uniform keys (kernels/dropout), invalid
 * positions keyed -1, top-k by key (equal keys by increasing index, tf.topk's order on cpu). One kernel where the
 * backend has it and samples <= AMI_DRAW_MAX_SAMPLES, the same positions in the same order.  -> int32 [R, samples]
 */
export function drawPositions(valid: tf.Tensor2D, samples: number, seed: number): tf.Tensor2D {
  if (kernelOn(DRAW) && samples <= AMI_DRAW_MAX_SAMPLES) return drawFromMask(valid, samples, seed); // [R, S]
  return tf.tidy(() => {
    const [R, N] = valid.shape;
    const keys = seededUniform([R, N], seed); // [R, N] in [0, 1)
    const masked = tf.where(valid, keys, tf.fill([R, N], -1)); // [R, N]
    return tf.topk(masked, samples, true).indices as tf.Tensor2D; // [R, S] int32, by decreasing key
  });
}

/** The AMI term's arguments (src/losses/attentionMI.ts checks them). */
export interface AttentionMIArgs extends MIAttrs {
  targetSamples: number;
  /** Positions drawn per row (S = min(targetSamples, N)); a row uses its first `samples` of them. */
  samples: number;
  seed: number;
  scaleEps: number;
  /** The caller pins the draw (read on the host): the kernels do not take it. */
  pinnedDraw: boolean;
}

/**
 * The AMI value and `drawn` ([rows, samples] int32) of `attentions [2B, L, H, T, T]`: by the kernels where the
 * backend has them, no draw is pinned, S <= AMI_DRAW_MAX_SAMPLES and rhoEps > 0 (rhoEps 0, the reference's unclamped
 * log, takes the stock ops on every backend: TF.js's log returns NaN below 0 explicitly on webgpu too, where WGSL's
 * own log leaves a negative argument undefined); else by `composed`, the method's stock ops.
 */
export function attentionMI(attentions: tf.Tensor, args: AttentionMIArgs, composed: () => [tf.Scalar, tf.Tensor1D]): [tf.Scalar, tf.Tensor1D] {
  const { targetSamples, samples, seed, scaleEps, cosineEps, rhoEps, nanValue } = args;
  if (args.pinnedDraw || !kernelOn(DRAW) || samples > AMI_DRAW_MAX_SAMPLES || !(rhoEps > 0)) return composed();
  return tf.tidy(() => {
    const a = attentions.dtype === 'float32' ? attentions : tf.cast(attentions, 'float32'); // (a float32 Cast is a copy)
    const plan = detached(() => attentionRowPlan(a, targetSamples, scaleEps)); // [R + 3]: rowMask, rows, samples, scale
    const positions = detached(() => drawFromAttention(a, samples, seed)); // [R, S]
    const v = attentionMIValue(a, positions, plan, { cosineEps, rhoEps, nanValue });
    return [v, drawnOfPlan(plan)] as [tf.Scalar, tf.Tensor1D];
  });
}
