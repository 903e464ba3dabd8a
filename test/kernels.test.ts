/**
 * The kernels layer registers nothing on import: importing the whole library leaves the engine's registry as TF.js
 * made it, and selecting a backend registers that backend's kernels (and only its own).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import '../src/index.js';
import { selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';

/** One kernel of each op folder that has a cpu kernel, by its registered name. */
const CPU_KERNELS = ['MicseDropout', 'MicseSeededUniform', 'MicseLayerNorm', 'MicseGelu', 'MicseGradNorm', 'MicseAdamW'];

const registered = (backendName: string) => CPU_KERNELS.filter((k) => tf.getKernel(k, backendName) !== undefined);

test('importing the library registers no kernel; selecting cpu registers the cpu kernels and the stock replacements', async () => {
  assert.deepEqual(registered('cpu'), []);
  assert.equal(tf.getGradient('MicseLayerNorm'), undefined);
  const stockSoftmax = tf.getKernel(tf.Softmax, 'cpu')!.kernelFunc;
  const sel = await selectBackend('cpu');
  assert.deepEqual(registered('cpu'), CPU_KERNELS);
  assert.deepEqual(registered('wasm'), [], 'another backend gets nothing');
  assert.notEqual(tf.getGradient('MicseLayerNorm'), undefined);
  assert.ok(sel.replacedKernels.includes(tf.Softmax));
  assert.notEqual(tf.getKernel(tf.Softmax, 'cpu')!.kernelFunc, stockSoftmax);
});
