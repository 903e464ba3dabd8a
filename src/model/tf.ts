/**
 * The one TF.js namespace the project computes with. Every module imports `tf` from here, so tensors built by
 * callers and by the library live on the same engine, whichever backend `selectBackend` activated.
 *
 * `@tensorflow/tfjs` (not tfjs-core alone) is used because in Node the core bundle has neither gradients nor
 * chained ops registered. Importing it sets none of the engine's flags (PROD stays as the caller set it, and with it
 * TF.js's warnings); the cpu backend's "install tfjs-node" banner is skipped where selectBackend activates that
 * backend (model/backend.ts).
 */
import * as tf from '@tensorflow/tfjs';

export { tf };
export type Tensor = tf.Tensor;
export type Scalar = tf.Scalar;
export type Tensor1D = tf.Tensor1D;
export type Tensor2D = tf.Tensor2D;
export type Tensor3D = tf.Tensor3D;
export type Tensor4D = tf.Tensor4D;
export type Variable = tf.Variable;

/**
 * Runs `compute` off the gradient tape and returns its result as a constant: the returned tensor has no tape
 * ancestry, so gradients neither flow through it nor are asked of it. (TF.js has no stopGradient; a custom
 * gradient with no inputs is recorded as a source node, and ops inside a kernel's forward pass are not taped.)
 * Needed for the draw: the positions are computed from the attention values (the valid mask), and TF.js would
 * otherwise ask `gather` for an (int32) gradient of its indices.
 */
export function detached<T extends tf.Tensor>(compute: () => T): T {
  return tf.customGrad(() => ({ value: compute(), gradFunc: () => [] }))() as T;
}
