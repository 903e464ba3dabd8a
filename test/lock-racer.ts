/**
 * A child process of test/pidlock.test.ts taking one PidLock. Usage: node --import tsx test/lock-racer.ts LOCK once
 * takes it, prints `held` and releases it (run at a lock fault point, it is killed there instead).
 * `... LOCK race MARKER DEAD_PID MS` prints `ready`, waits for a line on stdin, then for MS milliseconds takes the
 * lock over and over; holding it, it creates MARKER exclusively (an EEXIST there is an overlap: another process
 * holds the lock too), removes it, and then mostly leaves the lock stale, as a holder killed there would (a lock
 * naming DEAD_PID renamed over its own), else releases it. At the end it prints `{"held", "refused", "overlaps"}`.
 */
import { promises as fs } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '../src/errors.js';
import { PidLock } from '../src/fsutil.js';

const [file, mode, marker, dead, ms] = process.argv.slice(2);
const lock = new PidLock(file!, 'racer');

if (mode === 'once') {
  await lock.take();
  process.stdout.write('held\n');
  await lock.release();
} else {
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const stats = { held: 0, refused: 0, overlaps: 0 };
  const end = Date.now() + Number(ms);
  const abandoned = `${file}.abandoned-${process.pid}`;
  while (Date.now() < end) {
    try {
      await lock.take();
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      stats.refused += 1;
      await sleep(Math.random() * 2);
      continue;
    }
    stats.held += 1;
    try {
      await (await fs.open(marker!, 'wx')).close();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      stats.overlaps += 1;
    }
    await sleep(Math.random() < 0.5 ? 0 : 1);
    await fs.rm(marker!, { force: true });
    if (Math.random() < 0.8) {
      await fs.writeFile(abandoned, `${dead}\n`);
      await fs.rename(abandoned, file!);
    }
    await lock.release();
  }
  process.stdout.write(`${JSON.stringify(stats)}\n`);
}
