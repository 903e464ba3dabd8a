/**
 * `micse` command line. Thin: each command module parses its flags, calls one library function and prints.
 * A UserError (bad input), an out-of-range flag, or a file-system fault of the environment (read-only
 * or full disk, a file where a directory belongs) prints one line and exits 2; anything else is a bug and exits 1
 * with its stack.
 */
import yargs, { type Argv, type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { environmentError, UserError } from '../errors.js';
import { explainMkdirError } from '../fsutil.js';
import { embedCommand } from './embed.js';
import { trainCommand } from './train.js';
import { evalCommand } from './eval.js';
import { dataCommand } from './data.js';
import { useCommands } from './use.js';
import { exportCommand } from './export.js';
import { sweepCommands } from './sweep.js';

export const commands: CommandModule<any, any>[] = [trainCommand, embedCommand, evalCommand, dataCommand, exportCommand, ...useCommands, ...sweepCommands];

/** The parser of the `micse` command line over `argv` (without node and the script). */
export function buildCli(argv: string[]): Argv {
  let cli = yargs(argv)
    .scriptName('micse')
    .strict()
    .demandCommand(1, 'name a command')
    .recommendCommands()
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      // yargs' own parse and validation failures (a flag's coerce included) arrive as YErrors: bad input.
      throw err === undefined || err === null || err.name === 'YError' ? new UserError(msg ?? err.message) : err;
    });
  for (const c of commands) cli = cli.command(c);
  return cli;
}

/** The one line an error prints and the exit code: 2 for bad input and environment faults, 1 (with the stack) for bugs. */
export async function describeFailure(err: unknown): Promise<{ message: string; exitCode: number }> {
  const user = environmentError(await explainMkdirError(err));
  if (user !== null) return { message: `micse: ${user.message}`, exitCode: user.exitCode };
  return { message: `micse: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, exitCode: 1 };
}

/** Runs the command line; a failure prints its one line (see describeFailure) and sets the exit code. */
export async function runCli(argv: string[] = hideBin(process.argv)): Promise<void> {
  try {
    await buildCli(argv).parseAsync();
  } catch (err) {
    const { message, exitCode } = await describeFailure(err);
    process.stderr.write(message + '\n');
    process.exitCode = exitCode;
  }
}
