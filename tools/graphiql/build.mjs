// Build the GraphiQL assets graphql-service ships: `npm ci && npm run build` (tools/graphiql).
//
// Output, in service/server/graphiql/ (committed; pip install and `make run` need no Node.js):
//   graphiql-<hash>.js, graphiql-<hash>.css  the bundle (content hash in the name: served immutable)
//   manifest.json                             {"script": ..., "style": ...}: what the page loads
//   THIRD-PARTY-NOTICES.txt                   name, version and license text of every bundled package
// The build is reproducible: the same package-lock.json gives the same bytes
// (`npm run build` twice, then compare `sha256sum service/server/graphiql/*`).
import * as esbuild from 'esbuild';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// `node build.mjs [OUTDIR]`: OUTDIR (default: the package's directory) is emptied first.
const outdir = resolve(process.argv[2] ?? resolve(here, '../../service/server/graphiql'));

mkdirSync(outdir, { recursive: true });
for (const name of readdirSync(outdir)) {
  if (name !== '__init__.py') rmSync(join(outdir, name));
}

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { graphiql: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  platform: 'browser',
  define: { 'process.env.NODE_ENV': '"production"' },
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  // Fonts and icons stay inline (data: URLs), as graphiql ships them: one request per file type.
  loader: { '.woff2': 'dataurl', '.woff': 'dataurl', '.svg': 'dataurl', '.png': 'dataurl' },
  legalComments: 'none',
  sourcemap: false,
  charset: 'utf8',
  metafile: true,
  outdir,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => relative(outdir, resolve(here, p)));
const script = outputs.find((name) => name.endsWith('.js'));
const style = outputs.find((name) => name.endsWith('.css'));
if (!script || !style || outputs.length !== 2) {
  throw new Error(`unexpected build outputs: ${outputs.join(', ')}`);
}
writeFileSync(join(outdir, 'manifest.json'), `${JSON.stringify({ script, style }, null, 2)}\n`);

// Every npm package that went into the bundle, with its license text.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//);
  if (!match) continue;
  const dir = resolve(here, match[1]);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const key = `${pkg.name}@${pkg.version}`;
  if (packages.has(key)) continue;
  const files = readdirSync(dir).sort().filter((name) => /^(licen[cs]e|copying|notice)/i.test(name));
  const text = files.map((name) => readFileSync(join(dir, name), 'utf8').trim()).join('\n\n');
  packages.set(key, { name: pkg.name, version: pkg.version, license: pkg.license, text });
}
const notices = [...packages.values()]
  .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  .map(({ name, version, license, text }) =>
    [`${name} ${version} (${license || 'see below'})`, text || '(no license file in the package)'].join('\n\n'),
  );
writeFileSync(
  join(outdir, 'THIRD-PARTY-NOTICES.txt'),
  `The GraphiQL assets in this directory bundle these npm packages (tools/graphiql/package-lock.json):\n\n${notices.join(`\n\n${'-'.repeat(78)}\n\n`)}\n`,
);
console.log(`built ${script} and ${style} in ${relative(process.cwd(), outdir) || outdir}`);
