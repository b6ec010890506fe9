// npm's `prepare`: builds dist/ when this is a checkout with its dev dependencies (npm install in a
// clone, a git dependency, npm pack), and does nothing where there is nothing to build (an install
// from the packed tarball, which carries dist/; a production-only install in the container image).
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import process from 'node:process'

if (!existsSync('src') || !existsSync('tsconfig.build.json') || !existsSync('node_modules/typescript')) process.exit(0)
const r = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' })
if (r.status !== 0) process.exit(r.status ?? 1)
await import('./make-executable.mjs')
