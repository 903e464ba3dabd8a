/**
 * The library build (issue 18): a project that depends on this checkout imports `micse-tfjs` in plain Node (no tsx)
 * from dist/, and embeds what the sources embed; bin/micse.js runs dist/ while it is as new as the sources, else the
 * sources. Needs `npm run build` first (npm test runs it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { micseLoads, ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const run = promisify(execFile);
const SENTENCES = ['a man is playing a guitar .', 'hello', 'the cat sat on the mat'];
type ExportTarget = string | { [condition: string]: ExportTarget };
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  exports: Record<string, Record<string, ExportTarget>>;
  dependencies: Record<string, string>;
};

describe('library build', () => {
  let project = '';
  before(async () => {
    assert.ok(existsSync(path.join(ROOT, 'dist', 'src', 'index.js')), 'dist/src/index.js is missing: run `npm run build` first');
    project = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-library-'));
    await fs.mkdir(path.join(project, 'node_modules'));
    await fs.symlink(ROOT, path.join(project, 'node_modules', 'micse-tfjs'), 'dir');
    await fs.writeFile(path.join(project, 'package.json'), JSON.stringify({ type: 'module', dependencies: { 'micse-tfjs': `file:${ROOT}` } }));
  });
  after(async () => {
    if (project !== '') await fs.rm(project, { recursive: true, force: true });
  });

  it('package.json points Node, bundlers and types at dist/, and every export target exists after the build', () => {
    const entry = pkg.exports['.']!;
    // `browser` first with its own types: a bundler that resolves it gets the bundle, and TypeScript the bundle's declarations.
    assert.deepEqual(Object.keys(entry), ['browser', 'types', 'import']);
    assert.deepEqual(entry['browser'], { types: './dist/src/browser/index.d.ts', default: './dist/browser/micse.js' });
    const targets = (t: ExportTarget): string[] => (typeof t === 'string' ? [t] : Object.values(t).flatMap(targets));
    for (const target of targets(entry)) assert.ok(existsSync(path.join(ROOT, target)), `${target} is missing after the build`);
    for (const devOnly of ['@huggingface/transformers', 'hnswlib-node']) assert.equal(pkg.dependencies[devOnly], undefined, `${devOnly} is test-only`);
  });

  it('a dependent TypeScript project can name the types of the API (option, result and returned-object types) in Node and in a bundle', async () => {
    // Each name appears in a public signature (a parameter, a result, a returned class): a caller must be able to
    // write it down. SemanticIndex is what openIndex returns, Matrix what clusterVectors takes.
    await fs.writeFile(path.join(project, 'node.ts'), [
      "import type { SemanticIndex, SearchOptions, SearchResult, Matrix, Neighbor, HostTensor, ResolveOptions, BackendAttempt, AnnParams,",
      "  OnnxQuantization, DownloadOptions, DownloadResult, LoadedConfig, TokenizerTexts, SweepReport, QueueStatus, EmbedOptions } from 'micse-tfjs';",
      "import { openIndex, clusterVectors } from 'micse-tfjs';",
      "export async function top(dir: string, q: string[], o: SearchOptions): Promise<SearchResult> { const i: SemanticIndex = await openIndex(dir); return i.search(q, 3, o); }",
      "export const m: Matrix = { data: new Float32Array(4), rows: 2, dim: 2 };",
      "export const r = clusterVectors(m, { k: 1 });",
      "export type All = [Neighbor, HostTensor, ResolveOptions, BackendAttempt, AnnParams, OnnxQuantization, DownloadOptions, DownloadResult,",
      "  LoadedConfig, TokenizerTexts, SweepReport, QueueStatus, EmbedOptions];",
      // trainInMemory's config is typed (it took `unknown`): a misspelt key or a wrong value type does not compile.
      "import { trainInMemory, type PartialTrainConfig, type InMemoryTrainOptions } from 'micse-tfjs';",
      "declare const o: InMemoryTrainOptions;",
      "export const typed: PartialTrainConfig = { objective: { style: 'simcse' }, train: { maxSteps: 5 }, model: { hiddenDropout: null } };",
      "export const runs = trainInMemory(typed, o);",
      "// @ts-expect-error train.maxStep is not a key",
      "trainInMemory({ train: { maxStep: 5 } }, o);",
      "// @ts-expect-error objective.style is 'micse' or 'simcse'",
      "trainInMemory({ objective: { style: 'infonce' } }, o);",
      "// @ts-expect-error train.batchSize is a number",
      "trainInMemory({ train: { batchSize: '64' } }, o);",
    ].join('\n'));
    // The README's page example (`train` in the bundle is trainInMemory), as written there, with the bundle as micse-tfjs.
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const example = /<script type="module">\n(import \{[^}]*\btrain\b[^]*?)<\/script>/.exec(readme)?.[1];
    assert.ok(example !== undefined, "README.md's page example of train is missing");
    await fs.writeFile(path.join(project, 'readme-page.ts'), ['declare const sentences: string[];',
      example.replace(/from '\.\/micse\.js'/, "from 'micse-tfjs'"), 'export {};'].join('\n'));
    // A bundler resolves the `browser` condition to the bundle, whose loadPretrained also takes a page's files.
    await fs.writeFile(path.join(project, 'page.ts'), [
      "import { loadPretrained, cosine, type NamedBlob } from 'micse-tfjs';",
      "declare const files: NamedBlob[];",
      "export const p = loadPretrained(files);",
      "export const c: number = cosine([1, 0], [0, 1]);",
    ].join('\n'));
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const common = ['--noEmit', '--strict', '--skipLibCheck', '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules', '@types')];
    const compile = (args: string[]) => run(process.execPath, [tsc, ...common, ...args], { cwd: project }).catch((err: { stdout?: string }) => {
      assert.fail(`tsc ${args.join(' ')}:\n${err.stdout ?? String(err)}`);
    });
    await compile(['--module', 'nodenext', '--moduleResolution', 'nodenext', 'node.ts']);
    await compile(['--module', 'esnext', '--moduleResolution', 'bundler', '--customConditions', 'browser', 'page.ts', 'readme-page.ts']);
  });

  it('a dependent project imports micse-tfjs in plain Node and embeds as the sources do', { skip: SKIP_NO_SHARED }, async () => {
    const dir = shared('hf-reference', 'tiny-h32-l4');
    await fs.writeFile(path.join(project, 'main.js'), [
      "const m = await import('micse-tfjs');",
      "await m.selectBackend('cpu');",
      `const p = await m.loadPretrained(${JSON.stringify(dir)});`,
      `console.log(JSON.stringify(await m.embed(p.model, p.tokenizer, ${JSON.stringify(SENTENCES)})));`,
    ].join('\n'));
    // No --import tsx, no loader: a .ts file anywhere on the import path fails with "Unknown file extension .ts".
    const { stdout } = await run(process.execPath, ['main.js'], { cwd: project, env: { ...process.env, NODE_OPTIONS: '' } });
    const fromDist = JSON.parse(stdout) as number[][];
    await selectBackend('cpu');
    const p = await loadPretrained(dir);
    const fromSrc = await embed(p.model, p.tokenizer, SENTENCES);
    p.model.dispose();
    let maxDiff = 0;
    fromSrc.forEach((v, i) => v.forEach((x, k) => (maxDiff = Math.max(maxDiff, Math.abs(x - fromDist[i]![k]!)))));
    assert.ok(maxDiff <= 1e-6, `dist and src embeddings differ by ${maxDiff}`);
  });

  it('bin/micse.js runs the compiled CLI without tsx, and the sources once one is newer than the build', async () => {
    // bin/micse.js in a folder laid out as this checkout (links to its src/, eval/, node_modules/ and dist/'s
    // contents) with a BUILD_STAMP of its own, so that aging the stamp leaves the checkout's as it is for the
    // test files running beside this one.
    const checkout = path.join(project, 'checkout');
    await fs.mkdir(path.join(checkout, 'bin'), { recursive: true });
    await fs.copyFile(path.join(ROOT, 'bin', 'micse.js'), path.join(checkout, 'bin', 'micse.js'));
    for (const dir of ['src', 'eval', 'node_modules']) await fs.symlink(path.join(ROOT, dir), path.join(checkout, dir), 'dir');
    await fs.mkdir(path.join(checkout, 'dist'));
    for (const entry of await fs.readdir(path.join(ROOT, 'dist'))) {
      if (entry !== 'BUILD_STAMP') await fs.symlink(path.join(ROOT, 'dist', entry), path.join(checkout, 'dist', entry));
    }
    const stamp = path.join(checkout, 'dist', 'BUILD_STAMP');
    await fs.copyFile(path.join(ROOT, 'dist', 'BUILD_STAMP'), stamp);
    await fs.utimes(stamp, new Date(), new Date());
    // The modules the CLI loads show which entry ran.
    const entry = async (): Promise<string> => {
      const { code, stdout, urls } = await micseLoads(['--help'], project, path.join(checkout, 'bin', 'micse.js'));
      assert.equal(code, 0);
      assert.match(stdout, /embed/);
      return urls.some((u) => u.endsWith('/dist/src/cli/main.js')) ? 'dist' : urls.some((u) => u.endsWith('/src/cli/main.ts')) ? 'src' : 'neither';
    };
    assert.equal(await entry(), 'dist');
    await fs.utimes(stamp, new Date(0), new Date(0)); // as if src/ had been edited after the build
    assert.equal(await entry(), 'src');
  });
});
