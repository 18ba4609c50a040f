// Builds the JavaScript example plugins into Wasm components with componentize-js (the
// library call: the `jco componentize` CLI fails on these machines, see TOOLCHAINS.md).
// Run through build.sh, which installs the pinned version from npm first.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const examples = [{ name: 'echo', source: 'echo/echo.js', world: 'handler' }];
await mkdir(join(here, 'target'), { recursive: true });
for (const { name, source, world } of examples) {
  const { component } = await componentize({
    sourcePath: join(here, source),
    witPath: join(here, '../../wit'),
    worldName: world,
    // The sandbox grants none of these; leaving them out keeps the component smaller.
    disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
  });
  await writeFile(join(here, 'target', `${name}.wasm`), component);
  console.log(`built target/${name}.wasm (${component.length} bytes)`);
}
