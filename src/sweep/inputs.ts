/**
 * The check a sweep makes before it starts or enqueues anything: every point still to run must find its training
 * data file, its SentEval STS data and the model it starts from (a local directory, a Hub name in the Hugging Face
 * cache, or one the Hub can serve now). All missing inputs are reported at once, in one UserError with one line per
 * fix (inputs that one `micse data download` fetches share a line), so an offline machine learns in seconds what
 * it lacks instead of failing every point in turn.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { loadStsTasks, STS_TEST_TASKS } from '../../eval/sts.js';
import { SENTEVAL_DATA_HINT } from '../../eval/senteval.js';
import { downloadCommand, downloadCommandFor, fetchFailure } from '../data/download.js';
import { UserError } from '../errors.js';
import { exists } from '../fsutil.js';
import { hubFileUrl, hubOffline, hubStatusReason, hubToken, looksLikeModelId, repoFolder, resolveModelDir } from '../model/hub.js';
import { trainingFile } from '../train/plan.js';
import type { Sweep } from './grid.js';
import { pointDir, pointState } from './point.js';

/** How long the Hub may take to answer the probe for a model that is not in the cache. */
export const HUB_PROBE_TIMEOUT_MS = 5000;
/** Files named per line before "and N more". */
const FILES_SHOWN = 2;

interface Missing {
  /** What is missing ("model bert-base-uncased"); null for training files that one download fetches (in `files`). */
  what: string | null;
  /** Why it cannot be used. */
  why: string;
  files: string[];
  /** The command that fetches it, or null when no download provides it. */
  fetch: string | null;
  points: Set<string>;
}

async function isFile(file: string): Promise<boolean> {
  return fs.stat(file).then((s) => s.isFile(), () => false);
}

/** Why the SentEval data under `dir` cannot be read (every task the trainer reads), or null when it can. */
function stsProblem(dir: string): string | null {
  try {
    loadStsTasks(dir, [...STS_TEST_TASKS, 'stsb-dev']);
    return null;
  } catch (err) {
    if (err instanceof UserError) return err.message.replace(` (${SENTEVAL_DATA_HINT})`, '');
    throw err;
  }
}

/** Why model `init` cannot be loaded on this machine now, or null when it can (a directory, cached, or on the Hub). */
async function modelProblem(init: string): Promise<string | null> {
  try {
    // offline: a directory or a cached snapshot resolves without any download.
    await resolveModelDir(init, { offline: true });
    return null;
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    // resolveModelDir's messages start with the name, which the report line gives already.
    if (!looksLikeModelId(init) || (await exists(init)) || hubOffline()) return err.message.replace(`${init}: `, '');
  }
  const url = hubFileUrl(init, 'main', 'config.json');
  let reason: string;
  try {
    const token = hubToken();
    const headers: Record<string, string> = token === undefined ? {} : { Authorization: `Bearer ${token}` };
    const res = await fetch(url, { method: 'HEAD', redirect: 'manual', headers, signal: AbortSignal.timeout(HUB_PROBE_TIMEOUT_MS) });
    if (res.status < 400) return null;
    reason = hubStatusReason(res.status);
  } catch (err) {
    reason = (err as Error).name === 'TimeoutError' ? `no answer within ${HUB_PROBE_TIMEOUT_MS / 1000} s` : fetchFailure(err);
  }
  return `not in the Hugging Face cache (${repoFolder(init)}) and ${url} cannot be fetched (${reason}); ` +
    'run where the Hub is reachable once (the model is cached on first use), or set model.init to a local checkpoint directory';
}

/**
 * Throws one UserError listing every input that the sweep's points still to run (not done in `out`) cannot find.
 * Reads only; a point that has a `last/` checkpoint resumes from it and needs no model.
 */
export async function checkSweepInputs(sweep: Sweep, out: string): Promise<void> {
  const missing = new Map<string, Missing>();
  const note = (key: string, what: string | null, why: string, fetch: string | null, point: string, file?: string) => {
    const m = missing.get(key) ?? { what, why, files: [], fetch, points: new Set<string>() };
    if (file !== undefined && !m.files.includes(file)) m.files.push(file);
    m.points.add(point);
    missing.set(key, m);
  };
  const sts = new Map<string, string | null>();
  const models = new Map<string, string | null>();
  let todo = 0;
  for (const p of sweep.points) {
    const dir = pointDir(out, p);
    if ((await pointState(dir)) === 'done') continue;
    todo += 1;
    const c = p.config;
    const train = trainingFile(c);
    if (!(await isFile(train))) {
      const fetch = downloadCommandFor(train);
      if (fetch === null) note(`train:${train}`, `training data ${train}`, 'no such file', null, p.name);
      else note(`fetch:${fetch}`, null, 'no such file', fetch, p.name, train);
    }
    if (!sts.has(c.data.senteval)) sts.set(c.data.senteval, stsProblem(c.data.senteval));
    const stsWhy = sts.get(c.data.senteval)!;
    if (stsWhy !== null) {
      const fetch = path.basename(c.data.senteval) === 'senteval' ? downloadCommand('senteval', path.dirname(c.data.senteval)) : null;
      note(`sts:${c.data.senteval}`, `STS data ${c.data.senteval}`, stsWhy, fetch, p.name);
    }
    // A point with a checkpoint resumes from it: model and tokenizer come from there.
    if (await exists(path.join(dir, 'last'))) continue;
    const source = c.model.init === 'random' ? c.model.tokenizer! : c.model.init;
    if (!models.has(source)) {
      models.set(source, c.model.init === 'random'
        ? ((await exists(source)) ? null : 'no such directory')
        : await modelProblem(source));
    }
    const modelWhy = models.get(source)!;
    if (modelWhy !== null) note(`model:${source}`, `${c.model.init === 'random' ? 'tokenizer' : 'model'} ${source}`, modelWhy, null, p.name);
  }
  if (missing.size === 0) return;
  const lines = [...missing.values()].map((m) => {
    const n = `${m.points.size} point${m.points.size > 1 ? 's' : ''}`;
    if (m.what === null) {
      const shown = m.files.slice(0, FILES_SHOWN).join(', ') + (m.files.length > FILES_SHOWN ? ` and ${m.files.length - FILES_SHOWN} more` : '');
      return `training data ${shown} (${n}): ${m.why}; fetch with: ${m.fetch}`;
    }
    return `${m.what} (${n}): ${m.why}${m.fetch !== null ? `; fetch with: ${m.fetch}` : ''}`;
  });
  const affected = new Set([...missing.values()].flatMap((m) => [...m.points])).size;
  throw new UserError(`${sweep.file}: ${affected} of ${todo} points to run lack inputs; nothing was started or enqueued:\n  ` + lines.join('\n  '));
}
