/**
 * Writes docs/openapi.json: the RPC's OpenAPI 3.1 document, generated from the route table and the
 * zod schemas the server validates with (`src/rpc/openapi.ts`).
 *
 *   npm run openapi
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { routes, type ShoalApi } from '../src/rpc/api.js'
import { openApiDocument } from '../src/rpc/openapi.js'
import { SHOAL_VERSION } from '../src/version.js'
import { ROOT } from './lib/daemon-proc.js'

/** The route table needs an API only to bind handlers; none is called here. */
const unused = new Proxy({}, { get: () => async () => { throw new Error('not called') } }) as ShoalApi
const noExtras = { watch: async () => {}, metrics: async () => ({ contentType: 'text/plain', body: '' }), read: async () => { throw new Error('not called') } }
const out = join(ROOT, 'docs', 'openapi.json')
await writeFile(out, `${JSON.stringify(openApiDocument(routes(unused, noExtras), SHOAL_VERSION), null, 2)}\n`)
console.log(`wrote ${out}`)
