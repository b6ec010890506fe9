/**
 * The one owner of search index updates while the daemon runs. A version's document is refreshed
 * when a pull of it completes, when it is removed, when `add` or a pull request asks (before they
 * answer), and when the manifest a head names is fetched from the head's sender (that version then
 * shows in `search` before it is pulled); a model's label fields when a label moves or a head is
 * accepted.
 *
 * MUST hold: refreshes asked for the same version (or model) before the first of them has started
 * are one refresh, all callers waiting on it (a pull request and its `pull.completed` event run one
 * refresh); one asked for while another runs runs after it, so it sees the change that prompted
 * it. A failed refresh is logged and never fails its caller: the index is rebuilt at the next start
 * (`SearchIndex.open`).
 */
import type { Startable } from '@libp2p/interface'
import type { SearchIndex } from '../store/search-index.js'
import type { HeadBook } from '../heads/book.js'
import type { EventBus } from './events.js'
import type { Logger } from './logger.js'
import type { ManifestResolver } from './manifest-resolver.js'

export interface SearchFeedInit {
  search: Pick<SearchIndex, 'refresh' | 'refreshLabels'>
  events: Pick<EventBus, 'subscribe'>
  /** Heads accepted from peers: the manifests they name are fetched from their senders. */
  book: Pick<HeadBook, 'onAccepted'>
  manifests: Pick<ManifestResolver, 'learn'>
  log: Logger
  /** Where a manifest a head's sender served was refused is logged. @default `log` */
  headLog?: Logger
}

export class SearchFeed implements Startable {
  /** Refreshes asked for and not started yet, by `v:<version>` or `m:<model>`. */
  private readonly queued = new Map<string, Promise<void>>()
  private readonly running = new Map<string, Promise<void>>()
  private readonly stops: Array<() => void> = []

  constructor (private readonly init: SearchFeedInit) {}

  start (): void {
    this.stops.push(this.init.events.subscribe(e => {
      if (e.type === 'pull.completed' || e.type === 'version.removed') void this.refresh(e.data.version)
      if (e.type === 'label.moved' || e.type === 'head.accepted') void this.refreshLabels(e.data.model)
    }))
    this.stops.push(this.init.book.onAccepted(a => {
      const version = a.head.head.version
      const from = a.from
      if (from === undefined || version === null) return
      void (async () => {
        if (await this.init.manifests.learn(version, from)) await this.refresh(version)
      })().catch(err => (this.init.headLog ?? this.init.log).debug({ version, err: (err as Error).message }, 'manifest from a peer refused'))
    }))
  }

  stop (): void {
    for (const stop of this.stops.splice(0)) stop()
  }

  /** Refreshes the search document of `version`; resolves once it is current (a failure is logged). */
  async refresh (version: string): Promise<void> {
    await this.run(`v:${version}`, async () => { await this.init.search.refresh(version) }, { version })
  }

  /** Refreshes the label fields of `model`'s documents; resolves once they are current (a failure is logged). */
  async refreshLabels (model: string): Promise<void> {
    await this.run(`m:${model}`, async () => { await this.init.search.refreshLabels(model) }, { model })
  }

  private async run (key: string, work: () => Promise<void>, what: object): Promise<void> {
    const queued = this.queued.get(key)
    if (queued !== undefined) return await queued
    const before = this.running.get(key) ?? Promise.resolve()
    const next: Promise<void> = before.then(async () => {
      this.queued.delete(key)
      this.running.set(key, next)
      try {
        await work()
      } catch (err) {
        this.init.log.warn({ ...what, err: (err as Error).message }, 'search index update failed; it is rebuilt at the next start')
      } finally {
        if (this.running.get(key) === next) this.running.delete(key)
      }
    })
    this.queued.set(key, next)
    await next
  }
}
