/**
 * The kernels layer registers nothing on import: importing the whole library leaves the engine's registry as TF.js
 * made it, and selecting a backend registers that backend's kernels (and only its own). A backend whose private
 * internals are not the ones the kernels were written against (another package version, a field missing) keeps
 * TF.js's stock kernels, and the selection says why in one line.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import '../src/index.js';
import { registerKernels } from '../src/kernels/index.js';
import { internalsProblem, privateDependency } from '../src/kernels/platform/internals.js';
import { describeSelection, selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';

/** One kernel of each op folder that has a cpu kernel, by its registered name. */
const CPU_KERNELS = ['MicseDropout', 'MicseSeededUniform', 'MicseLayerNorm', 'MicseGelu', 'MicseGradNorm', 'MicseAdamW'];

const registered = (backendName: string) => CPU_KERNELS.filter((k) => tf.getKernel(k, backendName) !== undefined);

test('another version of a backend package than the pinned one is reported, naming both versions', () => {
  const cpu = tf.findBackend('cpu')!;
  const pinned = privateDependency('@tensorflow/tfjs-backend-cpu').version;
  assert.equal(internalsProblem('cpu', cpu, pinned), null);
  assert.equal(internalsProblem('cpu', cpu, '4.23.0'),
    `@tensorflow/tfjs-backend-cpu 4.23.0 is installed; its internals this project uses were written against ${pinned}`);
  assert.equal(internalsProblem('tensorflow', cpu, '0.0.1'), null, 'a backend with no listed internals');
});

test('a backend lacking a private field registers nothing and keeps the stock kernels, saying why', () => {
  const cpu = tf.findBackend('cpu')! as unknown as { data?: unknown };
  const data = cpu.data;
  delete cpu.data;
  try {
    const r = registerKernels('cpu');
    assert.deepEqual(r, { replaced: [], stockOnly: "@tensorflow/tfjs-backend-cpu 4.22.0's backend lacks data" });
  } finally {
    cpu.data = data;
  }
  assert.deepEqual(registered('cpu'), []);
  assert.equal(tf.getGradient('MicseLayerNorm'), undefined);
});

test('the backend line says, once, why a backend runs the stock kernels only', () => {
  const why = "@tensorflow/tfjs-backend-cpu 4.23.0 is installed; its internals this project uses were written against 4.22.0";
  const line = describeSelection({ requested: 'cpu', name: 'cpu', tfBackend: 'cpu', attempts: [{ name: 'cpu', ok: true, reason: 'requested' }],
    replacedKernels: [], stockOnly: why });
  assert.equal(line.split('\n').filter((l) => l.includes(why)).length, 1);
  assert.match(line, /^ {2}kernels: TF\.js's stock only \(@tensorflow\/tfjs-backend-cpu 4\.23\.0 is installed;/m);
});

test('importing the library registers no kernel; selecting cpu registers the cpu kernels and the stock replacements', async () => {
  assert.deepEqual(registered('cpu'), []);
  assert.equal(tf.getGradient('MicseLayerNorm'), undefined);
  const stockSoftmax = tf.getKernel(tf.Softmax, 'cpu')!.kernelFunc;
  const sel = await selectBackend('cpu');
  assert.equal(sel.stockOnly, null);
  assert.doesNotMatch(describeSelection(sel), /stock only/);
  assert.deepEqual(registered('cpu'), CPU_KERNELS);
  assert.deepEqual(registered('wasm'), [], 'another backend gets nothing');
  assert.notEqual(tf.getGradient('MicseLayerNorm'), undefined);
  assert.ok(sel.replacedKernels.includes(tf.Softmax));
  assert.notEqual(tf.getKernel(tf.Softmax, 'cpu')!.kernelFunc, stockSoftmax);
});
