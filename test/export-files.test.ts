/**
 * exportFiles (issue 18): a model in memory -> the bytes of hf, sentence-transformers and onnx, equal to what
 * `micse export` (exportCheckpoint) writes for the same checkpoint, its README.md model card aside.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../src/errors.js';
import { exportFiles, FILE_EXPORT_FORMATS, type FileExportFormat } from '../src/export/files.js';
import { exportCheckpoint } from '../src/export/index.js';
import { selectBackend } from '../src/model/backend.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { shared, SKIP_NO_SHARED } from './helpers.js';

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) out.push(...(await listFiles(path.join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

describe('exportFiles', { skip: SKIP_NO_SHARED }, () => {
  const checkpoint = shared('hf-reference', 'tiny-h32-l4');
  let tmp = '';
  let loaded: Pretrained | undefined;
  before(async () => {
    await selectBackend('cpu');
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-export-files-'));
    loaded = await loadPretrained(checkpoint);
  });
  after(async () => {
    loaded?.model.dispose();
    if (tmp !== '') await fs.rm(tmp, { recursive: true, force: true });
  });

  it('hf, sentence-transformers and onnx (int8 too): the bytes micse export writes, README.md aside', async () => {
    const output = path.join(tmp, 'exported');
    await exportCheckpoint({ checkpoint, output, formats: FILE_EXPORT_FORMATS, quantize: 'int8', verify: false });
    for (const format of FILE_EXPORT_FORMATS) {
      const files = await exportFiles(loaded!.model, loaded!.tokenizer, format, format === 'onnx' ? { quantize: 'int8' } : {});
      const written = (await listFiles(path.join(output, format))).filter((f) => f !== 'README.md');
      assert.deepEqual(Object.keys(files).sort(), written, `${format}: the same file list`);
      for (const f of written) {
        const disk = await fs.readFile(path.join(output, format, f));
        assert.ok(Buffer.from(files[f]!).equals(disk), `${format}/${f}: bytes differ from micse export's`);
      }
    }
  });

  it('an unknown format is a UserError naming it', async () => {
    await assert.rejects(exportFiles(loaded!.model, loaded!.tokenizer, 'tfjs' as FileExportFormat),
      (e: Error) => e instanceof UserError && /export format tfjs: unknown/.test(e.message));
  });
});
