#!/usr/bin/env node
/**
 * `node scripts/with-vulkan.mjs CMD ARGS...`: runs CMD with a Vulkan driver for Dawn where the machine has none, so
 * the webgpu tests check real values on a machine without a GPU (CI included).
 *
 * Debian's chromium ships SwiftShader as a Vulkan driver (/usr/lib/chromium/vk_swiftshader_icd.json) with its own
 * Vulkan loader (libvulkan.so.1). Where no system driver manifest exists and VK_DRIVER_FILES / VK_ICD_FILENAMES are
 * unset, CMD gets VK_DRIVER_FILES naming that manifest, and /usr/lib/chromium first on LD_LIBRARY_PATH so that Dawn
 * loads chromium's loader beside it (dlopen reads LD_LIBRARY_PATH only at process start, hence this launcher), and,
 * where MICSE_DAWN_OPTIONS is unset, MICSE_DAWN_OPTIONS=enable-dawn-features= the tests' Dawn toggles
 * (scripts/dawnTestToggles.mjs: SwiftShader compiles shaders without the workgroup memory fill several times faster).
 * Everything else runs as without it: `--backend auto` passes over a software adapter (src/model/backend.ts),
 * so only what names webgpu runs on SwiftShader. MICSE_TEST_SWIFTSHADER=0 turns it off.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { TEST_DAWN_FEATURES } from './dawnTestToggles.mjs';

const CHROMIUM_DIR = '/usr/lib/chromium';
const ICD = `${CHROMIUM_DIR}/vk_swiftshader_icd.json`;
const SYSTEM_ICD_DIRS = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];

function hasSystemDriver() {
  return SYSTEM_ICD_DIRS.some((d) => existsSync(d) && readdirSync(d).some((f) => f.endsWith('.json')));
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === undefined) {
  console.error('usage: node scripts/with-vulkan.mjs CMD [ARGS...]');
  process.exit(2);
}
const env = { ...process.env };
if (process.platform === 'linux' && env['MICSE_TEST_SWIFTSHADER'] !== '0' && env['VK_DRIVER_FILES'] === undefined &&
    env['VK_ICD_FILENAMES'] === undefined && !hasSystemDriver() && existsSync(ICD)) {
  env['VK_DRIVER_FILES'] = ICD;
  env['LD_LIBRARY_PATH'] = [CHROMIUM_DIR, env['LD_LIBRARY_PATH']].filter(Boolean).join(':');
  env['MICSE_DAWN_OPTIONS'] ??= `enable-dawn-features=${TEST_DAWN_FEATURES.join(',')}`;
}
const r = spawnSync(cmd, args, { stdio: 'inherit', env });
if (r.error !== undefined) {
  console.error(`${cmd}: ${r.error.message}`);
  process.exit(2);
}
process.exit(r.status ?? 1);
