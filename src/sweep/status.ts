/**
 * Where a sweep stands: from its output directory (done / failed / started / pending per point, from the marker
 * files) and, for a distributed sweep, from the queue (waiting / active / completed / failed jobs).
 */
import { readManifest, pointDir, pointState, readAttempts, type PointState } from './point.js';
import type { QueueStatus } from './queue.js';

export interface DiskStatus {
  out: string;
  points: { name: string; state: PointState; attempts: number }[];
  counts: Record<PointState, number>;
}

/** Reads every point's state in `out` (which must hold sweep.json). */
export async function diskStatus(out: string): Promise<DiskStatus> {
  const manifest = await readManifest(out);
  const counts: Record<PointState, number> = { done: 0, failed: 0, started: 0, pending: 0 };
  const points: DiskStatus['points'] = [];
  for (const p of manifest.points) {
    const dir = pointDir(out, p.name);
    const state = await pointState(dir);
    counts[state] += 1;
    points.push({ name: p.name, state, attempts: (await readAttempts(dir)).filter((a) => a.event === 'start').length });
  }
  return { out, points, counts };
}

/** Human-readable status: counts first, then the points that are not done. */
export function formatStatus(disk: DiskStatus | null, queue: QueueStatus | null): string {
  const lines: string[] = [];
  if (queue !== null) {
    const c = queue.counts;
    lines.push(`queue: ${c.completed} completed, ${c.active} running, ${c.failed} failed, ${c.waiting + c.delayed + c.prioritized} queued`);
    for (const a of queue.active) lines.push(`  running  ${a.name}${a.worker !== null ? ` (worker ${a.worker})` : ''}`);
    for (const f of queue.failed) lines.push(`  failed   ${f.name}: ${f.reason}`);
    for (const w of queue.waiting) lines.push(`  queued   ${w}`);
  }
  if (disk !== null) {
    const c = disk.counts;
    lines.push(`${disk.out}: ${c.done} done, ${c.failed} failed, ${c.started} started (running or interrupted), ${c.pending} not started ` +
      `(${disk.points.length} points)`);
    for (const p of disk.points) {
      if (p.state !== 'done') lines.push(`  ${p.state.padEnd(8)} ${p.name}${p.attempts > 0 ? ` (${p.attempts} attempt${p.attempts > 1 ? 's' : ''})` : ''}`);
    }
  }
  return lines.join('\n');
}
