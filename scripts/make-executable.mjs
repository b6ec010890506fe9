// Marks the CLI executable after a build (tsc writes files 0644): `./dist/cli/main.js` and the
// `shoal` bin of an install from the checkout run directly.
import { chmodSync, existsSync } from 'node:fs'

if (existsSync('dist/cli/main.js')) chmodSync('dist/cli/main.js', 0o755)
