/**
 * `micse export`: a checkpoint or run directory -> hf / sentence-transformers / onnx / tfjs folders. Prints each
 * folder with its files and sizes, and the ONNX check (onnxruntime vs the TF.js encoder on a few sentences).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { EXPORT_FORMATS, ONNX_QUANTIZATIONS, type ExportFormat } from '../export/formats.js';
import type { OnnxQuantization } from '../export/onnx/graph.js';
import type { BackendName } from '../model/backendNames.js';
import { activateBackend, withBackend } from './common.js';

interface ExportArgs {
  checkpoint: string;
  output: string;
  format?: ExportFormat[];
  force: boolean;
  quantize: OnnxQuantization;
  verify: boolean;
  backend: BackendName;
}

function size(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} B`;
}

export const exportCommand: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'Export a checkpoint for transformers, sentence-transformers, transformers.js (ONNX) and TF.js',
  builder: (y) =>
    withBackend(y)
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint directory, or run directory (uses best/, else last/)' })
      .option('output', { type: 'string', demandOption: true, describe: 'output directory (one format: written into it; several: one subfolder each)' })
      .option('format', { type: 'array', string: true, choices: EXPORT_FORMATS, describe: 'repeatable; default: all four, into subfolders hf/, sentence-transformers/, onnx/, tfjs/' })
      .option('force', { type: 'boolean', default: false, describe: 'replace a non-empty output directory' })
      .option('quantize', { choices: ONNX_QUANTIZATIONS, default: 'none' as OnnxQuantization, describe: 'onnx: also write onnx/model_quantized.onnx (dynamic int8 MatMuls)' })
      .option('verify', { type: 'boolean', default: true, describe: 'run the ONNX files through onnxruntime and compare with the TF.js encoder (--no-verify skips)' }) as never,
  handler: async (args) => {
    const { exportCheckpoint } = await import('../export/index.js');
    await activateBackend(args.backend);
    const result = await exportCheckpoint({
      checkpoint: args.checkpoint, output: args.output, ...(args.format !== undefined ? { formats: args.format } : {}),
      force: args.force, quantize: args.quantize, verify: args.verify, progress: true,
    });
    const out: string[] = [`exported ${result.checkpointDir}${result.runDir !== null ? ` (run ${result.runDir})` : ''}`];
    for (const w of result.written) {
      out.push(`${w.format}: ${w.dir}`);
      for (const f of w.files) out.push(`  ${f.padEnd(40)} ${size((await fs.stat(path.join(w.dir, f))).size)}`);
    }
    for (const c of result.onnxChecks) {
      out.push(`onnx check ${path.relative(result.output, c.file)}: max |onnxruntime - TF.js| = ${c.maxAbsDiff.toExponential(2)}, ` +
        `min cosine ${c.minCosine.toFixed(6)} on ${c.sentences} sentences`);
    }
    if (result.evalNote !== null) out.push(`model card: no STS table (${result.evalNote})`);
    process.stdout.write(out.join('\n') + '\n');
  },
};
