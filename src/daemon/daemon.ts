/**
 * The composition root: config → store → peer judge → pull manager → libp2p node → service →
 * RPC server, started in that order and stopped in reverse. `SIGTERM`/`SIGINT` stop it cleanly:
 * the RPC server stops taking requests, pulls flush their verified chunks (and resume at the next
 * start), the node hangs up, the index is closed.
 */
import type { Config } from '../config/config.js'
import { SOCKET_MODE } from '../config/config.js'
import { Slots, TokenBucket } from '../fetcher/bandwidth.js'
import { OriginClient } from '../fetcher/origin.js'
import { loadOrCreateIdentity } from '../p2p/identity.js'
import { PeerScores } from '../p2p/judge.js'
import { createNode, type ShoalNode } from '../p2p/node.js'
import { MAX_FRAME_BYTES, type ServerFaults, type UploadLimiter } from '../protocol/chunks/index.js'
import { routes } from '../rpc/api.js'
import { RpcServer } from '../rpc/server.js'
import { Store } from '../store/store.js'
import { ConflictError, InvalidInputError } from '../core/errors.js'
import { componentLogger, createLogger, type Logger } from './logger.js'
import { PullManager } from './pulls.js'
import { DaemonService } from './service.js'
import { peerIdFromString } from '@libp2p/peer-id'

/** @default 24 MiB — bytes one pull may have requested at once, across all peers */
export const MAX_PULL_IN_FLIGHT_BYTES = 24 * 1024 * 1024

export class Daemon {
  private store?: Store
  private rpc?: RpcServer
  private pulls?: PullManager
  private stopNode?: () => Promise<void>
  private origin?: OriginClient
  node?: ShoalNode
  readonly log: Logger

  constructor (readonly config: Config, log?: Logger) {
    this.log = log ?? createLogger(config.logLevel)
  }

  async start (): Promise<void> {
    const { config } = this
    const store = await Store.open(config.home, { log: componentLogger(this.log, 'store') })
    this.store = store
    try {
      const judge = new PeerScores({
        banMs: config.transfer.banSeconds * 1000,
        onBan: (peer, reason) => {
          this.log.warn({ peer, reason }, 'peer banned')
          void this.node?.hangUp(peerIdFromString(peer)).catch(() => {})
        }
      })
      this.origin = new OriginClient({ logger: componentLogger(this.log, 'origin') })
      const pulls = new PullManager(store, judge, {
        session: {
          strategy: config.transfer.strategy,
          pieceOrder: config.transfer.pieceOrder,
          maxInFlightBytes: MAX_PULL_IN_FLIGHT_BYTES,
          noProgressTimeoutMs: config.transfer.stallSeconds * 1000
        },
        origin: this.origin,
        ...(config.transfer.downloadRate !== undefined ? { download: new TokenBucket(config.transfer.downloadRate) } : {})
      }, componentLogger(this.log, 'pulls'))
      this.pulls = pulls
      const { node, stop } = await listening(config.p2p.listen, createNode({
        privateKey: await loadOrCreateIdentity(config.home),
        listen: config.p2p.listen,
        peers: config.p2p.peers,
        mdns: config.p2p.mdns,
        dht: config.p2p.dht,
        maxConnections: config.p2p.maxConnections,
        ...(config.p2p.allow !== undefined ? { allow: config.p2p.allow } : {}),
        isBanned: peer => judge.isBanned(peer),
        chunks: {
          source: pulls,
          limiter: uploadLimiter(config.transfer.uploadSlots, config.transfer.uploadRate),
          maxInFlightBytes: MAX_PULL_IN_FLIGHT_BYTES,
          log: componentLogger(this.log, 'chunks'),
          ...testFaults(this.log)
        },
        manifests: { manifest: async version => await store.manifestBytes(version) }
      }))
      this.node = node
      this.stopNode = stop
      pulls.attach(node)
      const service = new DaemonService(store, { home: config.home, socket: config.socket }, { node, pulls, judge })
      this.rpc = new RpcServer({ socket: config.socket, mode: SOCKET_MODE, routes: routes(service), log: componentLogger(this.log, 'rpc') })
      await this.rpc.start()
      await pulls.resumeAll()
    } catch (err) {
      await this.stop().catch(() => {})
      throw err
    }
    this.log.info({ home: config.home, socket: config.socket, peer: this.node?.peerId.toString(), listen: this.node?.getMultiaddrs().map(String) }, 'shoal daemon ready')
  }

  async stop (): Promise<void> {
    await this.rpc?.stop()
    await this.pulls?.stop()
    await this.stopNode?.()
    this.origin?.close()
    await this.store?.close()
    this.log.info({}, 'shoal daemon stopped')
  }

  /** Runs until SIGTERM or SIGINT, then stops. */
  async runUntilSignalled (): Promise<void> {
    await this.start()
    await new Promise<void>(resolve => {
      const onSignal = (signal: string): void => {
        this.log.info({ signal }, 'stopping')
        process.off('SIGTERM', onSignal)
        process.off('SIGINT', onSignal)
        resolve()
      }
      process.on('SIGTERM', onSignal)
      process.on('SIGINT', onSignal)
    })
    await this.stop()
  }
}

/** Turns a failure to bind into an error that says which address and what to do. */
async function listening<T> (addresses: string[], starting: Promise<T>): Promise<T> {
  try {
    return await starting
  } catch (err) {
    const text = `${(err as Error).message} ${String((err as { code?: string }).code ?? '')}`
    if (/EADDRINUSE|address already in use/i.test(text)) {
      throw new ConflictError(`cannot listen on ${addresses.join(', ')}: the address is in use (another shoal daemon?); pass --listen with a free port, e.g. --listen /ip4/0.0.0.0/tcp/4078`, { cause: err })
    }
    if (/EADDRNOTAVAIL|EACCES/i.test(text)) {
      throw new InvalidInputError(`cannot listen on ${addresses.join(', ')}: ${(err as Error).message}; pass --listen with an address of this host`, { cause: err })
    }
    throw err
  }
}

function uploadLimiter (slots: number, rate: number | undefined): UploadLimiter {
  const gate = new Slots(slots)
  const bucket = new TokenBucket(rate)
  return {
    acquire: async (bytes, signal) => {
      const release = await gate.acquire(signal)
      try {
        await bucket.take(bytes, signal)
      } catch (err) {
        release()
        throw err
      }
      return release
    },
    load: () => gate.inUse + gate.waiting
  }
}

/**
 * Test-only misbehaviour, from `SHOAL_TEST_FAULTS` (comma-separated: `corrupt`, `lie`, `stall`,
 * `oversize`, `nochunks`). Used by the end-to-end tests to run a lying, corrupting, stalling or
 * empty-handed peer; see `ServerFaults`.
 */
function testFaults (log: Logger): { faults?: ServerFaults } {
  const spec = process.env.SHOAL_TEST_FAULTS
  if (spec === undefined || spec === '') return {}
  const set = new Set(spec.split(','))
  log.warn({ faults: [...set] }, 'SHOAL_TEST_FAULTS is set: this node misbehaves on purpose')
  return {
    faults: {
      ...(set.has('corrupt') ? { corrupt: true } : {}),
      ...(set.has('lie') ? { lie: true } : {}),
      ...(set.has('stall') ? { stall: true } : {}),
      ...(set.has('oversize') ? { oversize: MAX_FRAME_BYTES * 2 } : {}),
      ...(set.has('nochunks') ? { noChunks: true } : {})
    }
  }
}
