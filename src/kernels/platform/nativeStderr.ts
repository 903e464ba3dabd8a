/**
 * What native code prints to file descriptor 2 during a call, filtered. Dawn (the npm package `webgpu`) prints from
 * native code, straight to fd 2, two notices whenever it discovers a Vulkan adapter whose driver reports more dynamic
 * buffers per pipeline layout than Dawn allocates for (Dawn's Limits.cpp; NVIDIA's driver, RADV and lavapipe do):
 *
 *   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
 *   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
 *
 * on every start, with nothing a user can act on (WebGPU's own limits for these are 8 and 4). `withStderrFiltered`
 * points fd 2 at an unlinked temporary file while `run` runs (glibc's dup and dup2, libc.ts), puts fd 2 back, then
 * writes what was printed meanwhile to it without the lines `drop` matches. JavaScript's own writes to a pipe or a
 * file go through fd 2 too and come back in order; a terminal's are not held (Node writes to it through an fd of its
 * own). Where libc.ts has no libc, outside Node, or inside another such call, `run` runs as it is.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { libcFunction } from './libc.js';
import { IS_NODE } from '../../isNode.js';

const STDERR_FD = 2;

/** Dawn's notices about the dynamic buffer limits it lowers (see the module comment), one line each. */
export const DAWN_LIMIT_NOTICE =
  /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

/** fd 2 pointed at a file: `restore` puts it back and returns what was written meanwhile. */
interface Redirection {
  restore(): string;
}

let active = false;

/** Points fd 2 at an unlinked temporary file; null where that cannot be done here. */
function redirectStderr(): Redirection | null {
  if (!IS_NODE || active) return null;
  let dup: (fd: number) => number, dup2: (from: number, to: number) => number, close: (fd: number) => number;
  try {
    dup = libcFunction('int dup(int fd)');
    dup2 = libcFunction('int dup2(int oldfd, int newfd)');
    close = libcFunction('int close(int fd)');
  } catch {
    return null;
  }
  const file = path.join(os.tmpdir(), `micse-stderr-${process.pid}-${Date.now()}`);
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx+', 0o600);
  } catch {
    return null;
  }
  try {
    fs.rmSync(file);
  } catch {
    fs.closeSync(fd);
    return null;
  }
  const saved = dup(STDERR_FD);
  if (saved < 0 || dup2(fd, STDERR_FD) < 0) {
    if (saved >= 0) close(saved);
    fs.closeSync(fd);
    return null;
  }
  active = true;
  return {
    restore(): string {
      dup2(saved, STDERR_FD);
      close(saved);
      active = false;
      const bytes = Buffer.alloc(fs.fstatSync(fd).size);
      fs.readSync(fd, bytes, 0, bytes.length, 0);
      fs.closeSync(fd);
      return bytes.toString('utf8');
    },
  };
}

/** Runs `run` with fd 2 held (see the module comment), then writes what it printed there less the lines `drop` matches. */
export async function withStderrFiltered<T>(drop: RegExp, run: () => Promise<T>): Promise<T> {
  const redirection = redirectStderr();
  if (redirection === null) return run();
  try {
    return await run();
  } finally {
    const kept = redirection.restore().split(/(?<=\n)/).filter((line) => !drop.test(line.replace(/\r?\n$/, ''))).join('');
    if (kept !== '') fs.writeSync(STDERR_FD, kept);
  }
}
