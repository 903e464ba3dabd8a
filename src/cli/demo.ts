/**
 * `micse demo`: serves the demo page (`npm run build` writes it to dist/demo/) on 127.0.0.1 with COOP/COEP, until
 * interrupted.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { serveStatic } from '../browser/serve.js';
import { UserError } from '../errors.js';
import { packageRoot } from '../packageRoot.js';
import { numberFlag } from './common.js';

interface DemoArgs {
  port: number;
}

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe: 'Serve the browser demo (load, train, evaluate, search and export in a tab) on 127.0.0.1',
  builder: (y) => y.option('port', { ...numberFlag('port', { integer: true, min: 0, max: 65535 }), default: 8080, describe: 'port on 127.0.0.1 (0: any free one)' }),
  handler: async (a) => {
    const dir = path.join(packageRoot(import.meta.url), 'dist', 'demo');
    if (!existsSync(path.join(dir, 'index.html'))) throw new UserError(`${dir}: missing; run \`npm run build\` first`);
    const server = await serveStatic({ '/': dir }, { port: a.port }).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EADDRINUSE' ? new UserError(`--port ${a.port}: in use on 127.0.0.1; pass another --port`) : err;
    });
    process.stdout.write(`micse demo: ${server.url}/ (serving ${dir}; Ctrl-C stops)\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await server.close();
  },
};
