/** `micse embed`: a corpus (txt or CSV column) -> one vector per sentence, as .jsonl or .npy. */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { openCorpus } from '../data/readers.js';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { embed, DEFAULT_EMBED_BATCH_SIZE } from '../model/embed.js';
import type { BackendName } from '../model/backend.js';
import { encodeNpy } from '../model/npy.js';
import { EMBED_POOLERS, type EmbedPooler } from '../model/pooling.js';
import { loadPretrained, resolveCheckpoint } from '../model/pretrained.js';
import { activateBackend, withBackend } from './common.js';

interface EmbedArgs {
  model: string;
  input: string;
  output: string;
  column?: string;
  pooler: EmbedPooler;
  'batch-size': number;
  'max-length'?: number;
  backend: BackendName;
}

export const embedCommand: CommandModule<object, EmbedArgs> = {
  command: 'embed',
  describe: 'Embed sentences (txt: one per line; csv/tsv: --column) into .jsonl or .npy',
  builder: (y) =>
    withBackend(y)
      .option('model', { type: 'string', demandOption: true, describe: 'checkpoint directory, run directory or Hub name' })
      .option('input', { type: 'string', demandOption: true, describe: '.txt (one sentence per line), .csv or .tsv' })
      .option('output', { type: 'string', demandOption: true, describe: '.jsonl ({"text","embedding"} per line) or .npy' })
      .option('column', { type: 'string', describe: 'CSV/TSV column name or 0-based index' })
      .option('pooler', { choices: EMBED_POOLERS, default: 'cls_before_pooler' as EmbedPooler, describe: 'raw [CLS] (as miCSE evaluates) or mean' })
      .option('batch-size', { type: 'number', default: DEFAULT_EMBED_BATCH_SIZE })
      .option('max-length', { type: 'number', describe: 'truncate to this many tokens (default: the model maximum)' }) as never,
  handler: async (args) => {
    const ext = path.extname(args.output).toLowerCase();
    if (ext !== '.jsonl' && ext !== '.npy') throw new UserError(`${args.output}: output must end in .jsonl or .npy`);
    await activateBackend(args.backend);
    const model = await resolveCheckpoint(args.model);
    const { model: bert, tokenizer } = await loadPretrained(model);
    const reader = openCorpus(args.input, { column: args.column ?? null });
    const sentences: string[] = [];
    for await (const rec of reader) sentences.push(rec.text);
    if (reader.stats.blank > 0 || reader.stats.invalid > 0) {
      process.stderr.write(`${args.input}: skipped ${reader.stats.blank} blank and ${reader.stats.invalid} invalid lines\n`);
    }
    const opts: Parameters<typeof embed>[3] = { batchSize: args['batch-size'], pooler: args.pooler, progress: true };
    if (args['max-length'] !== undefined) opts.maxLength = args['max-length'];
    const vectors = await embed(bert, tokenizer, sentences, opts);
    const body = ext === '.npy'
      ? encodeNpy(vectors, bert.config.hiddenSize)
      : sentences.map((text, i) => JSON.stringify({ text, embedding: vectors[i] })).join('\n') + (sentences.length > 0 ? '\n' : '');
    await writeFileAtomic(args.output, body);
    process.stderr.write(`wrote ${vectors.length} embeddings of dimension ${bert.config.hiddenSize} to ${args.output}\n`);
    bert.dispose();
  },
};
