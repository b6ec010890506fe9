/**
 * Request bodies of the local RPC (`/v1`), validated on every request. Unknown fields are refused
 * (strict objects) so a misspelt option is an error, not a silent default.
 */
import { z } from 'zod'
import { metadataSchema } from '../core/metadata.js'

export const API_VERSION = 'v1'
/** @default 1 MiB — request bodies are small JSON documents */
export const MAX_BODY_BYTES = 1024 * 1024

const ref = z.string().min(1).max(512)
// A pattern rather than a refinement, so the OpenAPI document states the rule too (NUL is the one
// character a path cannot hold).
// eslint-disable-next-line no-control-regex
const absolutePath = z.string().min(1).max(4096).regex(/^\/[^\u0000]*$/, 'must be an absolute path without NUL')

export const addRequest = z.strictObject({
  path: absolutePath,
  name: z.string().min(1).max(256),
  label: z.string().min(1).max(64).optional(),
  metadata: metadataSchema.optional(),
  metaFile: absolutePath.optional(),
  origin: z.string().url().max(2048).optional(),
  pin: z.boolean().optional(),
  /** Bytes per block of the version's block trees (a power of two from 16 KiB to 4 MiB); default 256 KiB. */
  blockSize: z.number().int().positive().max(4 * 1024 * 1024).optional()
})

export const refRequest = z.strictObject({ ref })

/** `layout: 'hf'`: `dest` is a Hugging Face hub cache folder; the version goes in as `models--<org>--<name>`. */
export const exportRequest = z.strictObject({ ref, dest: absolutePath, overwrite: z.boolean().optional(), layout: z.enum(['files', 'hf']).optional() })

export const gcRequest = z.strictObject({ dryRun: z.boolean().optional() })

export const verifyRequest = z.strictObject({})

const jitterMs = z.number().int().nonnegative().max(7 * 24 * 3600 * 1000).optional()
export const activationRequest = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('hot'), jitterMs }),
  z.strictObject({ mode: z.literal('cold'), at: z.number().int().positive().optional(), jitterMs })
])

export const labelRequest = z.strictObject({
  name: z.string().min(1).max(256),
  label: z.string().min(1).max(64),
  version: z.string().min(1).max(256),
  expect: z.string().min(1).max(256).nullable().optional(),
  activation: activationRequest.optional(),
  /** Publisher key name in this home (see keys). */
  key: z.string().min(1).max(64).optional()
})

export const rollbackRequest = z.strictObject({ ref, key: z.string().min(1).max(64).optional() })
export const keyRequest = z.strictObject({ name: z.string().min(1).max(64) })
export const trustRequest = z.strictObject({ key: z.string().min(1).max(128), models: z.string().min(1).max(256) })
export const trustRemoveRequest = z.strictObject({ key: z.string().min(1).max(128), models: z.string().min(1).max(256).optional() })

export const labelRemoveRequest = z.strictObject({ name: z.string().min(1).max(256), label: z.string().min(1).max(64) })

export type AddRequest = z.infer<typeof addRequest>
export type ExportRequest = z.infer<typeof exportRequest>
export type GcRequest = z.infer<typeof gcRequest>
export type LabelRequest = z.infer<typeof labelRequest>

export const pullRequest = z.strictObject({ ref, pin: z.boolean().optional() })
export type PullRequest = z.infer<typeof pullRequest>
/** `DELETE /v1/pull`: stop the pull of `name@<version id>` and drop its record and partial data. */
export const pullCancelRequest = z.strictObject({ ref })

/** `DELETE /v1/versions`: remove one version; `force` also when labelled, pinned or leased. */
export const removeRequest = z.strictObject({ ref, force: z.boolean().optional() })
export type RemoveRequest = z.infer<typeof removeRequest>

export const resolveRequest = z.strictObject({ ref, ensure: z.boolean().optional() })
export const leaseRequest = z.strictObject({
  ref,
  /** Who holds it, for `status` (e.g. "inference-3 pid 4242"). */
  holder: z.string().min(1).max(256),
  ttlSeconds: z.number().int().min(1).max(3600).optional()
})
export const leaseRenewRequest = z.strictObject({ id: z.string().regex(/^[0-9a-f]{24}$/, 'a lease id is 24 hex characters'), ttlSeconds: z.number().int().min(1).max(3600).optional() })
export const leaseReleaseRequest = z.strictObject({ id: z.string().regex(/^[0-9a-f]{24}$/, 'a lease id is 24 hex characters') })
