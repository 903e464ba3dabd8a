/**
 * `micse` command line. Thin: each command module parses its flags, calls one library function and prints. A command
 * module imports the library in its handler, so that help and argument errors load yargs and the flags' defaults
 * only, and a command loads what it runs (src/cli/*.ts import no TF.js, exporter, queue or index module statically).
 * A UserError (bad input), an unknown or out-of-range flag, or a file-system fault of the environment (read-only
 * or full disk, a file where a directory belongs) prints one line and exits 2; anything else is a bug and exits 1
 * with its stack.
 */
import yargs, { type Argv, type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { closest, didYouMean, UserError } from '../errors.js';
import { failureOf } from '../fsutil.js';
import { embedCommand } from './embed.js';
import { trainCommand } from './train.js';
import { evalCommand } from './eval.js';
import { dataCommand } from './data.js';
import { useCommands } from './use.js';
import { exportCommand } from './export.js';
import { sweepCommands } from './sweep.js';
import { demoCommand } from './demo.js';
import { flagName } from './common.js';

/** What the middleware and failure handler below read of a yargs instance, which @types/yargs does not declare. */
declare module 'yargs' {
  interface Argv<T = {}> {
    /** The options declared so far, by kind (keys), with their aliases and choices. */
    getOptions(): {
      key: Record<string, unknown>;
      alias: Record<string, string[]>;
      string: string[];
      boolean: string[];
      array: string[];
      choices: Record<string, unknown[]>;
    };
    /** The running command (its words and their full declarations), its subcommands and its options' descriptions. */
    getInternalMethods(): {
      getContext(): { commands: string[]; fullCommands: string[] };
      getUsageInstance(): { getDescriptions(): Record<string, string | undefined> };
      getCommandInstance(): { getCommands(): string[] };
    };
  }
}

export const commands: CommandModule<any, any>[] = [trainCommand, embedCommand, evalCommand, dataCommand, exportCommand, ...useCommands, ...sweepCommands, demoCommand];

const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Rejects the flags the running command does not declare, naming each with the nearest declared one:
 * "unknown option --confg (did you mean --config?)". Runs before yargs' own strict check, whose message names
 * neither the dashes nor the flag meant.
 */
function rejectUnknownOptions(argv: Record<string, unknown>, y: Argv): void {
  const declared = y.getOptions();
  const names = new Set([...Object.keys(declared.key), ...Object.values(declared.alias).flat()]);
  const known = new Set([...names].flatMap((n) => [n, camel(n)]));
  // '--': what follows a lone -- (operands, however they start), until yargs adds it to the positionals.
  const unknown = Object.keys(argv).filter((k) => k !== '_' && k !== '$0' && k !== '--' && !known.has(k));
  // yargs adds --foo-bar's camelCase twin fooBar: report the flag as typed.
  const typed = unknown.filter((k) => !unknown.some((other) => other !== k && camel(other) === k));
  if (typed.length === 0) return;
  const options = [...names].filter((n) => n.length > 1);
  throw new UserError(typed.map((k) => {
    const near = closest(k, options);
    return `unknown option ${flagName(k)}${near !== undefined ? ` (did you mean ${flagName(near)}?)` : ''}`;
  }).join('; '));
}

/** The flags as typed in `tokens` (up to a lone `--`): each one's name without dashes, and its `=value` if any. */
function typedFlags(tokens: readonly string[]): { name: string; value: string | undefined }[] {
  const end = tokens.indexOf('--');
  return (end === -1 ? tokens : tokens.slice(0, end)).filter((t) => /^--?[^-\d]/.test(t)).map((t) => {
    const eq = t.indexOf('=');
    return { name: t.slice(t.startsWith('--') ? 2 : 1, eq === -1 ? undefined : eq), value: eq === -1 ? undefined : t.slice(eq + 1) };
  });
}

/**
 * Rejects what yargs would take quietly: a string or choice flag given twice (yargs makes an array of them, which the
 * command would read as a path or a name; numeric flags say so in their coerce, common.ts), a string flag given no
 * value (yargs gives '', or nothing to a repeatable flag), and a switch given a value other than true or false
 * (yargs reads `--dry-run=yes` as false).
 */
function rejectMalformedValues(tokens: readonly string[], argv: Record<string, unknown>, y: Argv): void {
  const o = y.getOptions();
  const typed = typedFlags(tokens);
  const namesOf = (key: string): Set<string> => new Set([key, camel(key), ...(o.alias[key] ?? [])]);
  /** How many times the flag `key` (by any of its names) was typed. */
  const timesGiven = (key: string): number => {
    const names = namesOf(key);
    return typed.filter((f) => names.has(f.name)).length;
  };
  for (const key of [...new Set([...o.string, ...Object.keys(o.choices)])].filter((k) => !o.array.includes(k))) {
    const given = timesGiven(key);
    if (given > 1) throw new UserError(`${flagName(key)} given ${given} times; give it once`);
    if (given === 1 && argv[key] === '') throw new UserError(`${flagName(key)} needs a value`);
  }
  for (const key of o.array) {
    const given = timesGiven(key);
    const values = Array.isArray(argv[key]) ? (argv[key] as unknown[]).filter((v) => v !== '') : [];
    if (values.length < given) throw new UserError(`${flagName(key)} needs a value each time it is given`);
  }
  for (const key of o.boolean) {
    const names = namesOf(key);
    const bad = typed.find((f) => (names.has(f.name) || names.has(f.name.replace(/^no-/, ''))) && f.value !== undefined && f.value !== 'true' && f.value !== 'false');
    if (bad !== undefined) throw new UserError(`${flagName(bad.name)} is a switch: give it alone (or =true, =false), not =${bad.value}`);
  }
}

/**
 * yargs' message in one line; a value outside the choices of a flag or of a positional (one of `positionals`):
 * `--backend "gpu": choose one of auto, cpu`, `<datasets> "bogus": choose one of ...`.
 */
function oneLine(message: string, positionals: readonly string[]): string {
  const choices = /^Invalid values:\s*Argument: (\S+), Given: (.*), Choices: (.*)$/s.exec(message);
  if (choices !== null) {
    const name = positionals.includes(choices[1]!) ? `<${choices[1]!}>` : flagName(choices[1]!);
    return `${name} ${choices[2]!.trim()}: choose one of ${choices[3]!.trim().replace(/"/g, '')}`;
  }
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/** `what (description)` for the option or positional `key` of the running command, with its choices if it has some. */
function described(what: string, key: string, y: Argv): string {
  const describe = y.getInternalMethods().getUsageInstance().getDescriptions()[key];
  const choices = y.getOptions().choices[key];
  const about = [describe, choices !== undefined ? choices.join(', ') : undefined].filter((s) => s !== undefined && s !== '').join(': ');
  return `${what}${about !== '' ? ` (${about})` : ''}`;
}

/** The argv objects rejectUnknownCommand has checked. */
const judged = new WeakSet<object>();

/**
 * Rejects a word where the running command (or `micse` itself) expects one of its subcommands, naming them all with
 * the nearest: "unknown data command 'subst' (did you mean 'subset'?); data commands: subset, download"; and words
 * left over after a command without subcommands took its positionals: "embed: unexpected argument 'x'". Runs before
 * yargs' checks, which call either an unknown argument (or only guess the nearest command).
 */
function rejectUnknownCommand(argv: { _: (string | number)[] }, y: Argv): void {
  // yargs runs the middleware of a command with subcommands again once a subcommand has run, on the same argv and
  // with the subcommands no longer listed: the first run judged the words.
  if (judged.has(argv)) return;
  judged.add(argv);
  const internals = y.getInternalMethods();
  const { commands } = internals.getContext();
  const subcommands = internals.getCommandInstance().getCommands();
  const words = argv._.slice(commands.length).map(String);
  if (words.length === 0) return;
  if (subcommands.length === 0) {
    // A command without subcommands whose positionals (if any) took what they could: the rest is in excess.
    throw new UserError(`${commands.join(' ')}: unexpected argument${words.length === 1 ? '' : 's'} ${words.map((w) => `'${w}'`).join(', ')}`);
  }
  const kind = [...commands, 'command'].join(' ');
  throw new UserError(`unknown ${kind} '${words[0]}'${didYouMean(words[0]!, subcommands)}; ${kind}s: ${subcommands.join(', ')}`);
}

/**
 * yargs' "Missing required arguments: input, output" as the flags to give, as typed and described:
 * `embed: missing --input (.txt (one sentence per line), .csv or .tsv), --output (...)`. null for any other message.
 */
function missingOptions(message: string, y: Argv): string | null {
  const missing = /^Missing required arguments?: ([^\n]*)/.exec(message);
  if (missing === null) return null;
  const { commands } = y.getInternalMethods().getContext();
  const flags = missing[1]!.split(', ').map((key) => described(flagName(key), key, y));
  return `${commands.length > 0 ? `${commands.join(' ')}: ` : ''}missing ${flags.join(', ')}`;
}

/**
 * yargs' "Not enough non-option arguments: got N, ..." for a command whose required positional is missing, as what
 * to name: `sweep report: name <dir> (sweep output directory)`, with the positional's choices if it has some.
 * null for any other message.
 */
function missingPositional(message: string, y: Argv): string | null {
  const got = /^Not enough non-option arguments: got (\d+)/.exec(message);
  if (got === null) return null;
  const { commands, fullCommands } = y.getInternalMethods().getContext();
  const wanted = [...(fullCommands.at(-1) ?? '').matchAll(/<([^>]+)>/g)].map((m) => m[1]!)[Number(got[1])];
  if (wanted === undefined) return null;
  return `${commands.join(' ')}: name ${described(`<${wanted}>`, wanted.replace(/\.\.$/, ''), y)}`;
}

/** The names of the running command's positionals (`<datasets..>` and `[sentences..]` as datasets, sentences). */
function positionalNames(y: Argv): string[] {
  const { fullCommands } = y.getInternalMethods().getContext();
  return [...(fullCommands.at(-1) ?? '').matchAll(/[<[]([^>\]]+)[>\]]/g)].map((m) => m[1]!.replace(/\.\.$/, ''));
}

/** The parser of the `micse` command line over `argv` (without node and the script). */
export function buildCli(argv: string[]): Argv {
  let cli = yargs(argv)
    .scriptName('micse')
    .strict()
    .demandCommand(1, `name a command: ${commands.map((c) => String(c.command).split(' ')[0]).join(', ')}`)
    .middleware(rejectUnknownCommand as never, true)
    .middleware(rejectUnknownOptions as never, true)
    .middleware(((a: Record<string, unknown>, y: Argv) => rejectMalformedValues(argv, a, y)) as never, true)
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      // yargs' own parse and validation failures (a flag's coerce included) arrive as YErrors: bad input.
      if (err !== undefined && err !== null && err.name !== 'YError') throw err;
      const message = msg ?? err.message;
      throw new UserError(missingPositional(message, cli) ?? missingOptions(message, cli) ?? oneLine(message, positionalNames(cli)));
    });
  for (const c of commands) cli = cli.command(c);
  return cli;
}

/** The one line an error prints and the exit code: 2 for bad input and environment faults, 1 (with the stack) for bugs. */
export async function describeFailure(err: unknown): Promise<{ message: string; exitCode: number }> {
  const f = await failureOf(err);
  return { message: `micse: ${f.bug ? 'internal error: ' : ''}${f.message}`, exitCode: f.exitCode };
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
