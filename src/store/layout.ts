/**
 * Where things live under a shoal home. Readable by ordinary loaders, like the Hugging Face hub
 * cache:
 *
 * ```
 * <home>/
 *   config.json                 daemon config (optional)
 *   shoal.sock                  local RPC socket (mode 0660)
 *   index/                      LevelDB: chunk locations, blobs, manifests, versions, labels, pins
 *   blobs/<file digest>         one copy of each file's bytes, read-only (0444)
 *   models/models--<org>--<name>/
 *     snapshots/<version id>/<path>   relative symlink to ../../../blobs/<file digest>
 *     refs/<label>              the version id a label points at (replaced by rename)
 *   partial/<file digest>       files being pulled: verified chunks at their offsets (sparse)
 *   cold/<chunk id>             chunks only cold versions hold, encoded (`store/cold-chunks.ts`)
 *   tmp/                        work in progress; emptied at start-up
 *   quarantine/                 bytes that failed verification, kept for inspection
 * ```
 */
import { join, relative, dirname } from 'node:path'
import { modelDirName } from '../core/names.js'

export class Layout {
  readonly index: string
  readonly blobs: string
  readonly models: string
  readonly tmp: string
  readonly quarantine: string
  readonly partial: string
  readonly cold: string

  constructor (readonly home: string) {
    this.index = join(home, 'index')
    this.blobs = join(home, 'blobs')
    this.models = join(home, 'models')
    this.tmp = join(home, 'tmp')
    this.quarantine = join(home, 'quarantine')
    this.partial = join(home, 'partial')
    this.cold = join(home, 'cold')
  }

  coldChunk (id: string): string {
    return join(this.cold, id)
  }

  blob (digest: string): string {
    return join(this.blobs, digest)
  }

  partialBlob (digest: string): string {
    return join(this.partial, digest)
  }

  model (name: string): string {
    return join(this.models, modelDirName(name))
  }

  snapshots (name: string): string {
    return join(this.model(name), 'snapshots')
  }

  snapshot (name: string, version: string): string {
    return join(this.snapshots(name), version)
  }

  refs (name: string): string {
    return join(this.model(name), 'refs')
  }

  ref (name: string, label: string): string {
    return join(this.refs(name), label)
  }

  /** The relative symlink target, from `<snapshot>/<path>` to the blob. */
  linkTarget (snapshotFile: string, digest: string): string {
    return relative(dirname(snapshotFile), this.blob(digest))
  }
}
