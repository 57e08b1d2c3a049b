// Builds the demo app and the dashboard into dist/ (embedded in the
// switchboard binary by crates/server/build.rs):
//   dist/index.html, dist/dashboard.html, dist/assets/{demo,dashboard}.{js,css}
// The browser SDK is not bundled: the pages import it from the server at
// /sdk/switchboard.js (sdk/js/dist/switchboard.js, embedded as well).
import { build, context } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';

const watch = process.argv.includes('--watch');
await rm('dist', { recursive: true, force: true });
await mkdir('dist/assets', { recursive: true });
await copyFile('src/index.html', 'dist/index.html');
await copyFile('src/dashboard.html', 'dist/dashboard.html');

const options = {
  entryPoints: { demo: 'src/demo.js', dashboard: 'src/dashboard.js' },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  outdir: 'dist/assets',
  external: ['/sdk/switchboard.js'],
  minify: true,
  sourcemap: true,
  legalComments: 'eof',
  logLevel: 'info',
};

if (watch) {
  const ctx = await context(options);
  await ctx.watch();
} else {
  await build(options);
}
