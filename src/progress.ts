/**
 * The one progress helper every long loop uses (training, embedding a corpus, evaluation, downloads).
 * On a terminal it redraws one line (bar, counts, rate, ETA and caller fields); otherwise it prints a plain line
 * at most every `intervalMs`, so logs stay readable.
 */
export interface ProgressOptions {
  /** Total units (steps, sentences, bytes); undefined when unknown. */
  total?: number;
  label: string;
  /** Unit name for the rate, e.g. "sent" gives "sent/s". */
  unit?: string;
  stream?: NodeJS.WriteStream;
  /** Minimum time between plain-line reports. */
  intervalMs?: number;
  /** Print nothing at all. */
  silent?: boolean;
}

export interface Progress {
  /** Advance by `n` units and set the extra fields shown after the counts. */
  tick(n?: number, fields?: Record<string, string | number>): void;
  /** Final line, with total time and mean rate. */
  done(fields?: Record<string, string | number>): void;
  readonly count: number;
}

function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

function fmtFields(fields: Record<string, string | number> | undefined): string {
  if (fields === undefined) return '';
  return Object.entries(fields)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v}`)
    .join(' | ');
}

export function createProgress(opts: ProgressOptions): Progress {
  // A silent progress writes nothing, so it needs no stream (a page has no process.stderr).
  const stream = opts.silent === true ? null : (opts.stream ?? process.stderr);
  const tty = stream?.isTTY === true;
  const interval = opts.intervalMs ?? (tty ? 100 : 10_000);
  const unit = opts.unit ?? 'it';
  const start = Date.now();
  let last = tty ? 0 : start;
  let count = 0;
  let fields: Record<string, string | number> | undefined;

  const line = (final: boolean): string => {
    const elapsed = (Date.now() - start) / 1000;
    const rate = elapsed > 0 ? count / elapsed : 0;
    const parts: string[] = [opts.label];
    if (opts.total !== undefined && opts.total > 0) {
      const frac = Math.min(1, count / opts.total);
      if (tty) {
        const width = 20;
        const filled = Math.round(frac * width);
        parts.push(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`);
      }
      parts.push(`${count}/${opts.total}`);
      if (!final) parts.push(`ETA ${fmtDuration(rate > 0 ? (opts.total - count) / rate : Infinity)}`);
    } else {
      parts.push(String(count));
    }
    parts.push(`${rate.toFixed(rate >= 100 ? 0 : 2)} ${unit}/s`);
    if (final) parts.push(`in ${fmtDuration(elapsed)}`);
    const f = fmtFields(fields);
    if (f !== '') parts.push(f);
    return parts.join(' ');
  };

  return {
    get count() {
      return count;
    },
    tick(n = 1, f) {
      count += n;
      if (f !== undefined) fields = f;
      if (stream === null) return;
      const now = Date.now();
      if (now - last < interval) return;
      last = now;
      if (tty) stream.write(`\r\x1b[2K${line(false)}`);
      else stream.write(`${line(false)}\n`);
    },
    done(f) {
      if (f !== undefined) fields = f;
      if (stream === null) return;
      stream.write(`${tty ? '\r\x1b[2K' : ''}${line(true)}\n`);
    },
  };
}
