/**
 * micseHere: a micse command line in the test's own process. Apart from helpers.ts, which the tests packed for the GPU
 * machine import (bench/device/pack.sh): the CLI brings in modules that stay external there (usearch).
 */
import { buildCli, describeFailure } from '../src/cli/main.js';

/**
 * A micse command line run in this process from the folder `cwd` (default: the current one), as bin/micse.js runs
 * one (the same parser and one-line error) but without a process's start-up: its exit code and one-line message ('' on
 * success). For checks of what a command refuses; what needs a process of its own (kills, locks, output) spawns one.
 */
export async function micseHere(argv: string[], cwd = process.cwd()): Promise<{ exitCode: number; message: string }> {
  const back = process.cwd();
  process.chdir(cwd);
  try {
    await buildCli(argv).parseAsync();
    return { exitCode: 0, message: '' };
  } catch (err) {
    return await describeFailure(err);
  } finally {
    process.chdir(back);
  }
}
