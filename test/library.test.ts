/**
 * The library build (issue 18): a project that depends on this checkout imports `micse-tfjs` in plain Node (no tsx)
 * from dist/, and embeds what the sources embed. Needs `npm run build` first (npm test runs it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const run = promisify(execFile);
const SENTENCES = ['a man is playing a guitar .', 'hello', 'the cat sat on the mat'];
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  exports: Record<string, Record<string, string>>;
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
    assert.deepEqual(Object.keys(entry), ['types', 'browser', 'import']);
    for (const target of Object.values(entry)) assert.ok(existsSync(path.join(ROOT, target)), `${target} is missing after the build`);
    for (const devOnly of ['@huggingface/transformers', 'hnswlib-node']) assert.equal(pkg.dependencies[devOnly], undefined, `${devOnly} is test-only`);
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
    // A resolve hook that lists every module the CLI loads, so the test sees which entry ran.
    const hooks = path.join(project, 'hooks.mjs');
    const register = path.join(project, 'register.mjs');
    const loaded = path.join(project, 'loaded.txt');
    await fs.writeFile(hooks, `import { appendFileSync } from 'node:fs';
export async function resolve(spec, ctx, next) { const r = await next(spec, ctx); appendFileSync(${JSON.stringify(loaded)}, r.url + '\\n'); return r; }\n`);
    await fs.writeFile(register, `import { register } from 'node:module'; register(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    const entry = async (): Promise<string> => {
      await fs.rm(loaded, { force: true });
      const { stdout } = await run(process.execPath, ['--import', pathToFileURL(register).href, path.join(ROOT, 'bin', 'micse.js'), '--help'],
        { cwd: project, env: { ...process.env, NODE_OPTIONS: '' } });
      assert.match(stdout, /embed/);
      const urls = await fs.readFile(loaded, 'utf8');
      return urls.includes('/dist/src/cli/main.js') ? 'dist' : urls.includes('/src/cli/main.ts') ? 'src' : 'neither';
    };
    assert.equal(await entry(), 'dist');
    const stamp = path.join(ROOT, 'dist', 'BUILD_STAMP');
    const { atime, mtime } = await fs.stat(stamp);
    try {
      await fs.utimes(stamp, new Date(0), new Date(0)); // as if src/ had been edited after the build
      assert.equal(await entry(), 'src');
    } finally {
      await fs.utimes(stamp, atime, mtime);
    }
  });
});
