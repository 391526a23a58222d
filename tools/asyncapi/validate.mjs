// node tools/asyncapi/validate.mjs <file>: checks a YAML or JSON AsyncAPI document with the AsyncAPI
// project's own parser (its core and recommended rulesets, then its schema parsing), so that what we
// publish is judged by the same code the AsyncAPI tooling runs. One line per diagnostic,
// `<severity> <file>#<JSON pointer>: <message>` (the file only when a $ref led into another one), then
// `valid AsyncAPI <version>: <file>` when nothing is an error. Exit 1 on any error, 2 on an unreadable file.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'info', 'hint']; // DiagnosticSeverity's order

const file = process.argv[2];
if (!file || process.argv.length > 3) {
  console.error('usage: node validate.mjs <asyncapi.yaml|json>');
  process.exit(2);
}
const source = resolve(file);
let text;
try {
  text = await readFile(source, 'utf8');
} catch (err) {
  console.error(`cannot read ${file}: ${err.message}`);
  process.exit(2);
}

// The absolute source lets relative $refs to other files resolve against the document's own folder.
const { document, diagnostics } = await new Parser().parse(text, { source });
const pointer = (path) => '#' + (path ?? []).map((key) => '/' + String(key).replaceAll('~', '~0').replaceAll('/', '~1')).join('');
for (const d of diagnostics) {
  const where = d.source && d.source !== source ? d.source : '';
  console.log(`${SEVERITY[d.severity]} ${where}${pointer(d.path)}: ${d.message}`);
}
if (diagnostics.some((d) => d.severity === DiagnosticSeverity.Error) || !document) process.exit(1);
console.log(`valid AsyncAPI ${document.version()}: ${file}`);
