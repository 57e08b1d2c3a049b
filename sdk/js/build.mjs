// Bundles the SDK (and centrifuge-js) into one ES module: dist/switchboard.js.
// Type declarations are emitted separately by `tsc -p tsconfig.build.json`.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  outfile: 'dist/switchboard.js',
  minify: true,
  sourcemap: true,
  legalComments: 'eof',
  logLevel: 'info',
});
