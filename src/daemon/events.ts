/**
 * The daemon's event stream (types and payloads: `core/events.ts`): `label.moved`, `version.staged`, `version.removed`, `version.added`, `head.accepted`,
 * `pull.progress`… Each event gets the next id of a counter that only grows while the daemon runs,
 * prefixed by a boot id, so a client that reconnects can ask for what it missed (`since`) and tell
 * a restarted daemon (other boot id: its history is gone) from a live one.
 *
 * The last `EVENT_HISTORY` events are kept in memory; older ones are compacted away, and `since`
 * an id older than that answers `undefined` ("gone": re-read the state).
 */
import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import type { DaemonEvent, EventPayloads, EventSink, EventType } from '../core/events.js'

/** @default 10_000 events kept for replay */
export const EVENT_HISTORY = 10_000

export class EventBus implements EventSink {
  readonly boot = randomBytes(4).toString('hex')
  private seq = 0
  private readonly ring: DaemonEvent[] = []
  private readonly emitter = new EventEmitter()

  constructor (private readonly history = EVENT_HISTORY) {
    this.emitter.setMaxListeners(0)
  }

  emit<T extends EventType> (type: T, data: EventPayloads[T]): DaemonEvent<T> {
    const seq = ++this.seq
    // `type` and `data` were checked against each other by the signature; TypeScript cannot carry
    // that pairing into the union over all types.
    const event = { id: `${this.boot}-${seq}`, seq, type, time: Date.now(), data } as DaemonEvent
    this.ring.push(event)
    if (this.ring.length > this.history) this.ring.splice(0, this.ring.length - this.history)
    this.emitter.emit('event', event)
    return event as DaemonEvent<T>
  }

  /**
   * The id of the newest event (`<boot>-0` before any): `since` this cursor replays every event
   * that comes after the moment it was read.
   */
  cursor (): string {
    return `${this.boot}-${this.seq}`
  }

  subscribe (listener: (e: DaemonEvent) => void): () => void {
    this.emitter.on('event', listener)
    return () => { this.emitter.off('event', listener) }
  }

  /**
   * Events after `id`, oldest first; `undefined` when `id` is from another boot or older than the
   * kept history (the caller must re-read the state instead of replaying).
   */
  since (id: string): DaemonEvent[] | undefined {
    const [boot, seqText] = id.split('-')
    if (seqText === undefined || !/^\d{1,15}$/.test(seqText)) return undefined
    const seq = Number(seqText)
    if (boot !== this.boot || !Number.isInteger(seq) || seq < 0 || seq > this.seq) return undefined
    const first = this.ring[0]?.seq ?? this.seq + 1
    if (seq < first - 1) return undefined
    return this.ring.filter(e => e.seq > seq)
  }

  recent (limit = 100): DaemonEvent[] {
    return this.ring.slice(-limit)
  }
}
