/**
 * Named moments at which a test may kill this process, to check that every kill leaves state a rerun can recover.
 * `MICSE_FAULT_AT=NAME` or `NAME:N` makes the N-th (default first) call of `faultPoint(NAME)` SIGKILL the process
 * on the spot: no `finally`, no exit handler, as a power cut or `kill -9` would. With `MICSE_FAULT_SIGNAL=SIGSTOP`
 * it stops the process there instead (saying "fault point NAME: stopped (pid N)" on stderr first), so that a test can
 * run something else at that moment and then let it go on with SIGCONT. Without the variable a fault point is one
 * comparison.
 */

/** The fault points the code defines, each group in the order its operation (a checkpoint write, an export, an index build, a PidLock takeover) passes them. */
export const FAULT_POINTS = [
  'checkpoint:dir-created', // the temporary checkpoint folder exists, empty
  'checkpoint:model-written', // ... with config.json and model.safetensors
  'checkpoint:head-written', // ... and tokenizer files and mlp_head.safetensors
  'checkpoint:optimizer-written', // ... and optimizer.safetensors; trainer_state.json not yet
  'checkpoint:before-rename', // the temporary folder is complete
  'checkpoint:after-rename', // checkpoints/step-N exists; no link points to it yet
  'link:before-rename', // the new symlink exists under its temporary name
  'checkpoint:between-links', // `last` moved, `best` not yet
  'checkpoint:before-prune', // both links moved, old checkpoints not yet removed
  'metrics:torn-line', // half a metrics.jsonl line written
  'export:staged', // the export is complete in its staging folder, not yet published
  'export:moved-aside', // `export --force`: the previous output renamed aside, the new one not yet in place
  'index:locked', // `index build`: the lock on --out taken (the folder made for it where missing), nothing else checked yet
  'index:staged', // `index build --force`: the new index is complete in its staging folder, not yet published
  'index:moved-aside', // ... the previous --out renamed aside, the new index not yet in place
  'lock:takeover-staged', // PidLock taking over a stale lock: its takeover directory made, not yet moved into place
  'lock:takeover-held', // ... the takeover lock held and the lock read stale, not yet removed
  'lock:stale-removed', // ... the stale lock removed, the takeover lock not yet released
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export const FAULT_ENV = 'MICSE_FAULT_AT';
/** `SIGSTOP` to stop at the fault point instead of being killed there. */
export const FAULT_SIGNAL_ENV = 'MICSE_FAULT_SIGNAL';

function parseTarget(spec: string | undefined): { name: string; hit: number } | null {
  if (spec === undefined || spec === '') return null;
  const m = /^(.*?)(?::(\d+))?$/.exec(spec)!;
  return { name: m[1]!, hit: m[2] === undefined ? 1 : Number(m[2]) };
}

const target = parseTarget(process.env[FAULT_ENV]);
const stop = process.env[FAULT_SIGNAL_ENV] === 'SIGSTOP';
let hits = 0;

/**
 * Kills this process with SIGKILL (or stops it, see the module comment) when `MICSE_FAULT_AT` names `name` and this
 * is its N-th call. `beforeKill` runs first, synchronously, to leave a partial write behind (a torn line).
 */
export function faultPoint(name: FaultPoint, beforeKill?: () => void): void {
  if (target === null || target.name !== name) return;
  hits += 1;
  if (hits !== target.hit) return;
  beforeKill?.();
  if (stop) {
    // stderr is written synchronously to a pipe or file, so the line is out before the process stops.
    process.stderr.write(`fault point ${name}: stopped (pid ${process.pid})\n`);
    process.kill(process.pid, 'SIGSTOP');
    return;
  }
  process.kill(process.pid, 'SIGKILL');
}
