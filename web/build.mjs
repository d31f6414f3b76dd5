// Build the viewer into ../recon_serve/api/static/ (committed, so `pip install` users need no node):
// src/main.js + three.js -> app.js (one minified IIFE bundle), src/index.html and src/app.css copied.
//   npm ci && npm run build        (npm run watch: rebuild on change, unminified)
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'recon_serve', 'api', 'static');
const watch = process.argv.includes('--watch');

const options = {
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'iife',
  target: ['es2020'],
  minify: !watch,
  legalComments: 'eof',  // keep three.js's MIT notice in the bundle
  sourcemap: false,
  logLevel: 'info',
};

await mkdir(out, { recursive: true });
await rm(join(out, 'app.js.map'), { force: true });
for (const name of ['index.html', 'app.css']) await copyFile(join(here, 'src', name), join(out, name));

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log(`watching; writing ${out}`);
} else {
  await esbuild.build(options);
}
