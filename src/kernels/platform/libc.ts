/**
 * glibc's functions, called through koffi (an optional dependency: an FFI), for what Node has no API for: malloc's
 * tuning (hostMalloc.ts) and file descriptor 2 pointed elsewhere around a native call (nativeStderr.ts). Linux with
 * glibc only: elsewhere (musl, macOS, Windows, a browser) or without koffi, `libcFunction` throws, saying why.
 */
import { createRequire } from 'node:module';

/** The piece of koffi's API used here (koffi's index.d.ts: IKoffiLib.func), for functions of integer arguments. */
interface Koffi {
  load(path: string): { func(declaration: string): (...args: number[]) => number };
}

let libc: ReturnType<Koffi['load']> | undefined;

/** The glibc function `declaration` declares (C syntax, integer arguments and result), loading libc once. */
export function libcFunction(declaration: string): (...args: number[]) => number {
  libc ??= (createRequire(import.meta.url)('koffi') as Koffi).load('libc.so.6');
  return libc.func(declaration);
}
