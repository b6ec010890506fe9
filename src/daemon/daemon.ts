/**
 * The composition root: config → store → service → RPC server, started in that order and stopped
 * in reverse. `SIGTERM`/`SIGINT` stop it cleanly: the RPC server stops taking requests, in-flight
 * streams are cut (their operations abort and clean up), the index is closed.
 */
import type { Config } from '../config/config.js'
import { SOCKET_MODE } from '../config/config.js'
import { routes } from '../rpc/api.js'
import { RpcServer } from '../rpc/server.js'
import { Store } from '../store/store.js'
import { DaemonService } from './service.js'
import { componentLogger, createLogger, type Logger } from './logger.js'

export class Daemon {
  private store?: Store
  private rpc?: RpcServer
  readonly log: Logger

  constructor (readonly config: Config, log?: Logger) {
    this.log = log ?? createLogger(config.logLevel)
  }

  async start (): Promise<void> {
    const store = await Store.open(this.config.home, { log: componentLogger(this.log, 'store') })
    this.store = store
    try {
      const service = new DaemonService(store, { home: this.config.home, socket: this.config.socket })
      this.rpc = new RpcServer({ socket: this.config.socket, mode: SOCKET_MODE, routes: routes(service), log: componentLogger(this.log, 'rpc') })
      await this.rpc.start()
    } catch (err) {
      await store.close()
      throw err
    }
    this.log.info({ home: this.config.home, socket: this.config.socket }, 'shoal daemon ready')
  }

  async stop (): Promise<void> {
    await this.rpc?.stop()
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
