/**
 * The kernels layer registers nothing on import: importing the whole library leaves the engine's registry and flags
 * as TF.js made them (PROD too, so TF.js's warnings still print), and selecting a backend registers that backend's
 * kernels (and only its own); selecting cpu skips its "install tfjs-node" banner, nothing else. A backend whose private
 * internals are not the ones the kernels were written against (another package version, a field missing) keeps
 * TF.js's stock kernels, and the selection says why in one line.
 *
 * And, read from the sources: the method (src/model, src/losses, src/train) calls ops (src/kernels/<op>/index.ts)
 * and names no backend, no backend file and no kernel availability; every registration happens inside a function
 * (the register functions registerKernels calls), none at a module's top level.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';
import '../src/index.js';
import { registerKernels } from '../src/kernels/index.js';
import { internalsProblem, privateDependency } from '../src/kernels/platform/internals.js';
import { describeSelection, selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { ROOT, srcImport } from './helpers.js';

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

test("importing the library leaves TF.js's PROD flag at its default; selecting and using cpu prints no tfjs-node banner, and TF.js's warnings still print", () => {
  // A process of its own: the first import of TF.js and the cpu backend's first tensor happen here.
  const script = `
    const warned = [];
    console.warn = (...args) => warned.push(args.join(' '));
    ${srcImport('tf, selectBackend', 'index.ts')}
    const prod = tf.env().get('PROD');
    await selectBackend('cpu');
    const sum = tf.tensor([1, 2, 3]).add(1).sum().dataSync()[0];
    tf.backend_util.warn('a warning of the caller');
    console.log(JSON.stringify({ prod, backend: tf.getBackend(), sum, warned }));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // tfjs-core registers PROD as false (flags.ts); in a page only ?tfjsflags=PROD:true in the URL sets it otherwise.
  assert.deepEqual(JSON.parse(r.stdout.trim()), { prod: false, backend: 'cpu', sum: 9, warned: ['a warning of the caller'] });
  assert.equal(r.stderr, '');
});

const SRC = path.join(ROOT, 'src');

/** The .ts files under `dir` (relative to src/, '/'-separated), recursively. */
function sources(dir: string): string[] {
  return readdirSync(path.join(SRC, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(SRC, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
    .sort();
}

function parse(file: string): ts.SourceFile {
  return ts.createSourceFile(file, readFileSync(path.join(SRC, file), 'utf8'), ts.ScriptTarget.Latest, true);
}

function walk(node: ts.Node, visit: (n: ts.Node) => void): void {
  visit(node);
  node.forEachChild((c) => walk(c, visit));
}

/** `source`'s import and export specifiers (static and dynamic), relative ones resolved to src/-relative .ts paths. */
function imports(source: ts.SourceFile): string[] {
  const out: string[] = [];
  walk(source, (n) => {
    let spec: ts.Expression | undefined;
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier !== undefined) spec = n.moduleSpecifier;
    if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) spec = n.arguments[0];
    if (spec === undefined || !ts.isStringLiteralLike(spec)) return;
    const s = spec.text;
    out.push(s.startsWith('.') ? path.posix.join(path.posix.dirname(source.fileName), s).replace(/\.js$/, '.ts') : s);
  });
  return out;
}

/** An op's public functions: src/kernels/<op>/index.ts (not platform/ nor stock/). */
const OP = /^kernels\/(?!platform\/|stock\/)[^/]+\/index\.ts$/;
/** Backend packages. */
const BACKEND_PACKAGE = /^(@tensorflow\/tfjs-backend-|@tensorflow\/tfjs-node|webgpu$)/;
/** Backends by their TF.js names. */
const BACKEND_NAME = /^(cpu|wasm|webgpu|webgl|tensorflow)$/;
/** Names that choose between an op's kernels and its composed ops. */
const KERNEL_CHOICE = /^(kernelOn|fused\w*|\w*Available|\w*KernelsOn|\w*Implementation|withComposedOps)$/;
/**
 * The modules of the method folders that select the backend (and so name backends and register the kernels), and
 * the list of backend names the selection offers (a module of its own, which the CLI loads without TF.js).
 */
const SELECTS_BACKEND = new Set(['model/backend.ts', 'model/backendNames.ts', 'train/step.ts']);

/**
 * Where the method's code (`source`, a file of src/model, src/losses or src/train) reaches past an op's public
 * functions into the kernels layer, imports a backend, names one, asks which is active, or chooses kernels.
 */
function methodViolations(source: ts.SourceFile): string[] {
  const found: string[] = [];
  for (const s of imports(source)) {
    if ((s.startsWith('kernels/') && !OP.test(s)) || BACKEND_PACKAGE.test(s)) found.push(`imports ${s}`);
  }
  walk(source, (n) => {
    if (ts.isStringLiteralLike(n) && BACKEND_NAME.test(n.text)) found.push(`names the backend '${n.text}'`);
    if (ts.isIdentifier(n) && KERNEL_CHOICE.test(n.text)) found.push(`chooses kernels: ${n.text}`);
    if (ts.isPropertyAccessExpression(n) && /^(getBackend|backend|findBackend|setBackend)$/.test(n.name.text)
      && ts.isIdentifier(n.expression) && n.expression.text === 'tf') found.push(`asks tf.${n.name.text}`);
  });
  return found;
}

describe('the layers, read from the sources', () => {
  test('the method (src/model, src/losses, src/train) calls ops and names no backend, backend file or kernel choice', () => {
    const method = ['model', 'losses', 'train'].flatMap((d) => sources(d).filter((f) => !SELECTS_BACKEND.has(f)));
    assert.ok(method.includes('model/bert.ts') && method.includes('losses/attentionMI.ts') && method.includes('train/adamw.ts'));
    const bad = method.flatMap((f) => methodViolations(parse(f)).map((v) => `${f}: ${v}`));
    assert.deepEqual(bad, []);
  });

  test('that check finds a backend file, platform/, a backend package, a backend name, tf.getBackend and a kernel choice', () => {
    const code = `import { gelu } from '../kernels/gelu/index.js';
      import { registerGeluWebgpu } from '../kernels/gelu/webgpu.js';
      import { recordRaw } from '../kernels/platform/webgpuPrograms.js';
      import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
      // a comment may say 'webgpu'
      if (tf.getBackend() === 'wasm') x = fusedInfoNCEAvailable(a) ? fusedInfoNCE(a) : amiKernelsOn();`;
    assert.deepEqual(methodViolations(ts.createSourceFile('losses/probe.ts', code, ts.ScriptTarget.Latest, true)), [
      'imports kernels/gelu/webgpu.ts', 'imports kernels/platform/webgpuPrograms.ts', 'imports @tensorflow/tfjs-backend-webgpu',
      'asks tf.getBackend', "names the backend 'wasm'", 'chooses kernels: fusedInfoNCEAvailable', 'chooses kernels: fusedInfoNCE',
      'chooses kernels: amiKernelsOn',
    ]);
  });

  test('no module under src/ registers a kernel or gradient at its top level: only inside functions', () => {
    const bad: string[] = [];
    for (const file of sources('.')) {
      walk(parse(file), (n) => {
        if (!ts.isCallExpression(n)) return;
        const callee = ts.isPropertyAccessExpression(n.expression) ? n.expression.name.text
          : ts.isIdentifier(n.expression) ? n.expression.text : '';
        if (!/^register/.test(callee)) return;
        let up: ts.Node | undefined = n.parent;
        while (up !== undefined && !ts.isFunctionLike(up)) up = up.parent;
        if (up === undefined) bad.push(`${file}:${n.getSourceFile().getLineAndCharacterOfPosition(n.getStart()).line + 1}: ${callee}(...) at the top level`);
      });
    }
    assert.deepEqual(bad, []);
  });
});
