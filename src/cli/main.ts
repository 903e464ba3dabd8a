/**
 * `micse` command line. Thin: each command module parses its flags, calls one library function and prints.
 * A UserError (bad input) prints one line and exits 2; anything else is a bug and exits 1 with its stack.
 */
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { UserError } from '../errors.js';
import { embedCommand } from './embed.js';
import { trainCommand } from './train.js';
import { evalCommand } from './eval.js';
import { dataCommand } from './data.js';
import { useCommands } from './use.js';
import { exportCommand } from './export.js';
import { sweepCommands } from './sweep.js';
import { demoCommand } from './demo.js';

const commands: CommandModule<any, any>[] = [trainCommand, embedCommand, evalCommand, dataCommand, exportCommand, ...useCommands, ...sweepCommands, demoCommand];

async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('micse')
    .strict()
    .demandCommand(1, 'name a command')
    .recommendCommands()
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      throw err ?? new UserError(msg);
    });
  for (const c of commands) cli = cli.command(c);
  await cli.parseAsync();
}

try {
  await main(hideBin(process.argv));
} catch (err) {
  if (err instanceof UserError) {
    process.stderr.write(`micse: ${err.message}\n`);
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`micse: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  }
}
