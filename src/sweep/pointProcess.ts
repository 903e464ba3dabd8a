/**
 * Entry module of the child process that spawnPoint (point.ts) starts for one sweep point: `node pointProcess.js DIR`
 * with an IPC channel. Not for import: loading it runs the point.
 *
 * It runs runPoint(DIR), sends the outcome to the parent and exits 0; a failure (already in DIR/error.json) prints
 * one line (a stack for a bug) and exits 2 for bad input or an environment fault, 1 otherwise. When the parent dies
 * the IPC channel closes and this process exits at once, so a killed sweep runner or worker leaves no orphan run.
 */
import { failureOf } from '../fsutil.js';
import { runPoint, type PointMessage } from './point.js';

const dir = process.argv[2];
const orphaned = () => process.exit(1);
process.once('disconnect', orphaned);
try {
  if (dir === undefined || process.send === undefined) throw new Error('pointProcess: started without an IPC channel or a point directory; spawnPoint starts it');
  const message: PointMessage = { outcome: await runPoint(dir) };
  await new Promise<void>((resolve, reject) => process.send!(message, undefined, undefined, (e: Error | null) => (e ? reject(e) : resolve())));
} catch (err) {
  const { message, exitCode } = await failureOf(err);
  process.stderr.write(`${message}\n`);
  process.exitCode = exitCode;
} finally {
  // The open IPC channel would keep this process alive.
  process.off('disconnect', orphaned);
  if (process.connected) process.disconnect();
}
