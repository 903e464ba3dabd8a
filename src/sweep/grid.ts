/**
 * Sweep configs: a base training config plus a grid of values, expanded to points (one training run each).
 *
 * ```yaml
 * base: ../tiny.yaml            # a training config file (relative to this file), or a mapping of training keys
 *                               # (a mapping may carry its own `extends`, also relative to this file)
 * grid:                         # key path -> list of values; the points are the cartesian product, in this order
 *   split: [../fewshot/micse-0.1pct.yaml, ../fewshot/micse-1pct.yaml]   # optional: training configs layered
 *                                                                        # over the base (with their extends chain)
 *   objective.style: [micse, simcse]
 *   data.subsetSeed: [48, 49, 50]
 * ```
 * A point's config = defaults <- base (chain) <- split file (chain) <- its grid values, validated like any training
 * config (errors name the file, the line and the key: placeOf). Paths inside training configs stay relative to
 * the working directory, as for `micse train`. A point's name is built from its grid values
 * (`count=32__seed=48__style=micse`) and names its run directory.
 */
import path from 'node:path';
import { shownValue, UserError } from '../errors.js';
import { isJsonObject } from '../fsutil.js';
import {
  checkConsistency, configError, configLayers, defaultConfig, mergeConfig, placeOf, readYamlFile, SCHEMA, type ConfigLayer, type TrainConfig,
} from '../train/config.js';

/** The grid key that layers whole training config files. */
export const SPLIT_KEY = 'split';
/** Grid keys averaged over in reports (the seeds). */
export const SEED_KEYS: readonly string[] = ['data.subsetSeed', 'train.seed'];
/** Short labels used in point names (else the key's last segment). */
const NAME_ALIASES: Readonly<Record<string, string>> = { 'data.subsetSeed': 'seed', 'optim.learningRate': 'lr', 'train.seed': 'trainSeed' };
/** Separators of point names: `label=value` joined by `__`. */
export const NAME_JOIN = '__';

export type GridValue = string | number | boolean | null;

export interface SweepPoint {
  /** Directory name and queue job id, e.g. `count=32__seed=48__style=micse`. */
  name: string;
  /** Grid key -> value of this point (split values are the file paths as written). */
  params: Record<string, GridValue>;
  /** The full validated training config (train.output set by the runner). */
  config: TrainConfig;
}

export interface Sweep {
  /** The sweep file. */
  file: string;
  /** Grid keys in file order. */
  keys: string[];
  points: SweepPoint[];
}

function checkKeyPath(key: string, where: string): void {
  if (key === SPLIT_KEY) return;
  const [sec, k, ...rest] = key.split('.');
  const section = (SCHEMA as Record<string, Record<string, unknown>>)[sec ?? ''];
  const ok = section !== undefined && k !== undefined && k in section && (rest.length === 0 || (sec === 'model' && k === 'config'));
  if (!ok) {
    throw new UserError(`${where}: grid key '${key}' is not a training config key (section.key, e.g. data.subsetSeed, ` +
      `objective.style, optim.learningRate; model.config.NAME; or '${SPLIT_KEY}')`);
  }
}

/** `{a.b.c: v}` as the nested mapping mergeConfig takes (model.config.X merges into the current model.config). */
function nestedOverride(key: string, value: GridValue): Record<string, Record<string, unknown>> {
  const [sec, k, ...rest] = key.split('.');
  if (sec === 'model' && k === 'config' && rest.length > 0) return { model: { config: { [rest.join('.')]: value } } };
  return { [sec!]: { [k!]: value } };
}

function valueLabel(v: GridValue): string {
  const s = typeof v === 'number' ? String(v) : v === null ? 'null' : String(v);
  return s.replace(/[^A-Za-z0-9.+-]+/g, '-');
}

/** How a split file is named in point names: by the subset it draws (fraction=/count=), else by its file name. */
function splitLabel(file: string, config: TrainConfig): [string, string] {
  if (config.data.fraction !== null) return ['fraction', valueLabel(config.data.fraction)];
  if (config.data.count !== null) return ['count', valueLabel(config.data.count)];
  return [SPLIT_KEY, valueLabel(path.basename(file).replace(/\.(ya?ml|json)$/i, ''))];
}

function labelsFor(keys: readonly string[]): Map<string, string> {
  const base = keys.map((k) => NAME_ALIASES[k] ?? k.split('.').pop()!);
  return new Map(keys.map((k, i) => [k, base.filter((b) => b === base[i]).length > 1 ? k : base[i]!]));
}

/** Reads and expands a sweep file. Every point's config is built and validated before anything runs. */
export async function loadSweep(file: string): Promise<Sweep> {
  const raw = await readYamlFile(file, 'sweep');
  for (const k of Object.keys(raw)) {
    if (k !== 'base' && k !== 'grid') {
      throw new UserError(`${placeOf(file, raw, [k])}: unknown top-level key '${k}' (a sweep has 'base' and 'grid')`);
    }
  }
  const dir = path.dirname(file);
  let baseLayers: ConfigLayer[] = [];
  if (typeof raw['base'] === 'string') {
    const baseFile = path.resolve(dir, raw['base']);
    baseLayers = await configLayers(await readYamlFile(baseFile, 'config', `${placeOf(file, raw, ['base'])}: base`), baseFile);
  } else if (raw['base'] !== undefined && raw['base'] !== null) {
    if (!isJsonObject(raw['base'])) {
      throw new UserError(`${placeOf(file, raw, ['base'])}: base must be a config file path or a mapping of training keys`);
    }
    baseLayers = await configLayers(raw['base'], file, []);
  }

  const gridRaw = raw['grid'] ?? {};
  if (!isJsonObject(gridRaw)) throw new UserError(`${placeOf(file, raw, ['grid'])}: grid must be a mapping of key path -> list of values`);
  const grid = Object.entries(gridRaw);
  /** Where grid key `k` is in the sweep file, or its `i`th value. */
  const gridPlace = (k: string, i?: number): string => placeOf(file, raw, i === undefined ? ['grid', k] : ['grid', k, i]);
  for (const [k, values] of grid) {
    checkKeyPath(k, gridPlace(k));
    if (k === 'train.output') {
      throw new UserError(`${gridPlace(k)}: grid.train.output: each point trains into its own directory under the sweep's --out`);
    }
    if (!Array.isArray(values) || values.length === 0) throw new UserError(`${gridPlace(k)}: grid.${k} must be a non-empty list`);
    values.forEach((v, i) => {
      if (v !== null && typeof v === 'object') {
        throw new UserError(`${gridPlace(k, i)}: grid.${k} values must be scalars, got ${JSON.stringify(v)}`);
      }
    });
    const notFile = k === SPLIT_KEY ? values.findIndex((v) => typeof v !== 'string') : -1;
    if (notFile >= 0) throw new UserError(`${gridPlace(k, notFile)}: grid.${SPLIT_KEY} lists training config files`);
  }
  const keys = grid.map(([k]) => k);
  const labels = labelsFor(keys);

  const splitLayers = new Map<string, ConfigLayer[]>();
  for (const [i, v] of ((grid.find(([k]) => k === SPLIT_KEY)?.[1] ?? []) as string[]).entries()) {
    const f = path.resolve(dir, v);
    splitLayers.set(v, await configLayers(await readYamlFile(f, 'config', `${gridPlace(SPLIT_KEY, i)}: grid.${SPLIT_KEY}`), f));
  }

  // Cartesian product, first key outermost; `at` holds where each value is in the sweep file.
  let combos: { params: Record<string, GridValue>; at: Record<string, string> }[] = [{ params: {}, at: {} }];
  for (const [k, values] of grid) {
    combos = combos.flatMap((c) => (values as GridValue[]).map((v, i) => ({
      params: { ...c.params, [k]: v },
      at: { ...c.at, [k]: gridPlace(k, i) },
    })));
  }

  const points: SweepPoint[] = [];
  const seen = new Map<string, { params: Record<string, GridValue>; at: Record<string, string> }>();
  for (const { params, at } of combos) {
    let config = defaultConfig();
    for (const l of baseLayers) config = mergeConfig(config, l.raw, l.file);
    const split = params[SPLIT_KEY];
    if (typeof split === 'string') for (const l of splitLayers.get(split)!) config = mergeConfig(config, l.raw, l.file);
    const nameParts: string[] = [];
    for (const k of keys) {
      const v = params[k]!;
      if (k === SPLIT_KEY) continue;
      config = mergeConfig(config, nestedOverride(k, v), `${at[k]}: grid.${k}=${shownValue(v)}`, `${at[k]} (grid.${k}: ${shownValue(v)})`);
    }
    for (const k of keys) {
      if (k === SPLIT_KEY) {
        const [l, v] = splitLabel(params[k] as string, config);
        nameParts.push(`${l}=${v}`);
      } else nameParts.push(`${labels.get(k)}=${valueLabel(params[k]!)}`);
    }
    const name = nameParts.length > 0 ? nameParts.join(NAME_JOIN) : 'base';
    checkConsistency(config, `${file} (point ${name})`);
    if (!config.train.finalEval) {
      throw configError(config, ['train.finalEval'], 'train.finalEval is false, but every sweep point ends with the STS evaluation', `${file} (point ${name})`);
    }
    const twin = seen.get(name);
    if (twin !== undefined) {
      // Named by the places of the grid values the two points take from different items (a value listed twice, split
      // files drawing the same subset, values that differ only in characters a name drops).
      const places = keys.filter((k) => twin.at[k] !== at[k]).flatMap((k) => [twin.at[k]!, at[k]!]);
      throw new UserError(`${places.join(' and ')}: points ${JSON.stringify(twin.params)} and ${JSON.stringify(params)} ` +
        `get the same name '${name}'; make the grid values distinct`);
    }
    seen.set(name, { params, at });
    points.push({ name, params, config });
  }
  return { file, keys, points };
}
