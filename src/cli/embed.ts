/** `micse embed`: a corpus (txt or CSV column) -> one vector per sentence, as .jsonl or .npy. */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { UserError } from '../errors.js';
import { checkOutputFile, refuseOverwritingInput, writeFileAtomic } from '../fsutil.js';
import { activateBackend, embedOpts, maxLengthLoadOpts, readSentences, withEmbedFlags, type EmbedFlags } from './common.js';

interface EmbedArgs extends EmbedFlags {
  input: string;
  output: string;
  column?: string;
  force: boolean;
}

export const embedCommand: CommandModule<object, EmbedArgs> = {
  command: 'embed',
  describe: 'Embed sentences (txt: one per line; csv/tsv: --column) into .jsonl or .npy',
  builder: (y) =>
    withEmbedFlags(y)
      .option('input', { type: 'string', demandOption: true, describe: '.txt (one sentence per line), .csv or .tsv' })
      .option('output', { type: 'string', demandOption: true, describe: '.jsonl ({"text","embedding"} per line) or .npy' })
      .option('column', { type: 'string', describe: 'CSV/TSV column name or 0-based index' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing --output file' }) as never,
  handler: async (args) => {
    const ext = path.extname(args.output).toLowerCase();
    if (ext !== '.jsonl' && ext !== '.npy') throw new UserError(`${args.output}: output must end in .jsonl or .npy`);
    await refuseOverwritingInput(args.output, `--output ${args.output}`, args.input);
    await checkOutputFile(args.output, '--output', args.force);
    const sentences = (await readSentences(args.input, args.column, { purpose: 'embed' })).map((r) => r.text);
    const { embed } = await import('../model/embed.js');
    const { encodeNpy } = await import('../model/npy.js');
    const { loadPretrained, resolveCheckpoint } = await import('../model/pretrained.js');
    await activateBackend(args.backend);
    const model = await resolveCheckpoint(args.model);
    const { model: bert, tokenizer } = await loadPretrained(model, maxLengthLoadOpts(args));
    const vectors = await embed(bert, tokenizer, sentences, { ...embedOpts(args), progress: true });
    const body = ext === '.npy'
      ? encodeNpy(vectors, bert.config.hiddenSize)
      : sentences.map((text, i) => JSON.stringify({ text, embedding: vectors[i] }) + '\n').join('');
    await writeFileAtomic(args.output, body);
    process.stderr.write(`wrote ${vectors.length} embeddings of dimension ${bert.config.hiddenSize} to ${args.output}\n`);
    bert.dispose();
  },
};
