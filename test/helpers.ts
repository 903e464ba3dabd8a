/**
 * Shared test helpers: the read-only ../shared folder and its skip rule. $MICSE_SHARED_DIR replaces ../shared
 * (bench/device/run.sh points it at the copy of the shared data it carries to a GPU machine).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SHARED = path.resolve(process.env['MICSE_SHARED_DIR'] || path.join(ROOT, '..', 'shared'));
export const SHARED_DATA = path.join(SHARED, 'data');
export const HAS_SHARED = existsSync(SHARED_DATA);
/** Pass as `{ skip: SKIP_NO_SHARED }` to tests that read ../shared. */
export const SKIP_NO_SHARED: string | false = HAS_SHARED
  ? false
  : `../shared is absent (expected at ${SHARED}): tests that read the shared reference data are skipped`;

export function shared(...parts: string[]): string {
  return path.join(SHARED_DATA, ...parts);
}
