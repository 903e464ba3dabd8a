/**
 * Runs several `micse` command lines in one process, as bin/micse.js runs one (the same parser and error report),
 * so the environment-fault tests pay Node, tsx and TF.js start-up once per environment (a read-only mount
 * namespace, a file size limit). Usage: node --import tsx test/cli-driver.ts '[["embed", ...], ...]'. Prints one
 * `RESULT {"argv", "exitCode", "message", "seconds"}` line per command line on stdout.
 */
import { buildCli, describeFailure } from '../src/cli/main.js';

const runs = JSON.parse(process.argv[2] ?? '[]') as string[][];
for (const argv of runs) {
  let result: { exitCode: number; message: string };
  const t0 = Date.now();
  try {
    await buildCli(argv).parseAsync();
    result = { exitCode: 0, message: '' };
  } catch (err) {
    result = await describeFailure(err);
  }
  process.stdout.write(`RESULT ${JSON.stringify({ argv, ...result, seconds: (Date.now() - t0) / 1000 })}\n`);
}
