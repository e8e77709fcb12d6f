// Bundles editor.js and its CodeMirror packages into ../static/vendor/editor.js (one classic script, minified) and
// writes the bundled packages' licences beside it. Run through `make editor` (npm ci first).
import { build } from "esbuild";
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static", "vendor");

const result = await build({
  entryPoints: [join(here, "editor.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "none",
  metafile: true,
  outfile: join(out, "editor.js"),
  banner: { js: "/* The workbench's draft editor: CodeMirror 6 and its packages, bundled by webhook/workbench/editor"
    + " (make editor). Licences: editor.LICENSES.txt. */" },
});

// Every package with a file in the bundle, with its licence text.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.add(match[1]);
}
const sections = [...packages].sort().map((name) => {
  const folder = join(here, "node_modules", name);
  const meta = JSON.parse(readFileSync(join(folder, "package.json"), "utf8"));
  const file = readdirSync(folder).find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = file ? readFileSync(join(folder, file), "utf8").trim() : `License: ${meta.license} (no licence file in the package)`;
  return `${name} ${meta.version} (${meta.license})\n${"-".repeat(72)}\n${text}\n`;
});
writeFileSync(join(out, "editor.LICENSES.txt"),
  "The packages bundled in editor.js, each with its licence as the package ships it.\n\n" + sections.join("\n"));
console.log(`editor.js: ${packages.size} packages`);
