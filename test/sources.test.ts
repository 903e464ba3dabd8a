/**
 * loadPretrainedFrom (issue 18): a checkpoint read from a page's Files or from a URL gives the model and tokenizer
 * the directory gives; a source without config.json is a one-line error naming it.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../src/errors.js';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { filesSource, loadPretrained, loadPretrainedFrom, urlSource } from '../src/model/pretrained.js';
import { serveStatic } from './browserHarness.js';
import { shared, SKIP_NO_SHARED } from './helpers.js';

const SENTENCES = ['a man is playing a guitar .', 'café déjà vu'];

describe('loadPretrainedFrom', { skip: SKIP_NO_SHARED }, () => {
  const dir = shared('hf-reference', 'tiny-h32-l4');
  let reference: number[][] = [];
  let server: Awaited<ReturnType<typeof serveStatic>> | undefined;
  before(async () => {
    await selectBackend('cpu');
    const p = await loadPretrained(dir);
    reference = await embed(p.model, p.tokenizer, SENTENCES);
    p.model.dispose();
    server = await serveStatic({ '/model/': dir });
  });
  after(async () => {
    await server?.close();
  });

  it('File objects of a checkpoint folder embed as the folder does', async () => {
    const files = await Promise.all((await fs.readdir(dir)).map(async (n) => new File([await fs.readFile(path.join(dir, n))], n)));
    const p = await loadPretrainedFrom(filesSource(files));
    assert.deepEqual(await embed(p.model, p.tokenizer, SENTENCES), reference);
    assert.equal(p.tokenizer.files.builtFrom, 'tokenizer.json');
    p.model.dispose();
  });

  it('a base URL embeds as the folder does', async () => {
    const p = await loadPretrainedFrom(urlSource(`${server!.url}/model`));
    assert.deepEqual(await embed(p.model, p.tokenizer, SENTENCES), reference);
    p.model.dispose();
  });

  it('a source without config.json or weights is a UserError naming the file', async () => {
    await assert.rejects(loadPretrainedFrom(urlSource(`${server!.url}/nothing/`)),
      (e: Error) => e instanceof UserError && e.message.startsWith(`${server!.url}/nothing/config.json: missing`));
    const config = new File([await fs.readFile(path.join(dir, 'config.json'))], 'config.json');
    const vocab = new File([await fs.readFile(path.join(dir, 'vocab.txt'))], 'vocab.txt');
    await assert.rejects(loadPretrainedFrom(filesSource([config, vocab])), (e: Error) => e instanceof UserError && /model\.safetensors: missing/.test(e.message));
  });
});
