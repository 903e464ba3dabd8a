/**
 * The checkout itself: what the README's examples write into it is ignored by git (issue 22).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from './helpers.js';

const inWorkTree = spawnSync('git', ['rev-parse', '--is-inside-work-tree'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() === 'true';
const SKIP_NO_GIT: string | false = inWorkTree ? false : 'not a git work tree (or no git): the .gitignore check is skipped';

describe('.gitignore', { skip: SKIP_NO_GIT }, () => {
  it("ignores the README export examples' outputs (exported/, my-onnx/) and the main job's run directory", () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    for (const dir of ['exported', 'my-onnx']) {
      assert.match(readme, new RegExp(`--output ${dir}\\b`), `the README example writes ${dir}/`);
    }
    for (const file of ['exported/hf/model.safetensors', 'my-onnx/onnx/model.onnx', 'checkpoints/tiny/metrics.jsonl']) {
      const r = spawnSync('git', ['check-ignore', '--no-index', '-q', file], { cwd: ROOT });
      assert.equal(r.status, 0, `${file} is ignored by git`);
    }
  });
});
