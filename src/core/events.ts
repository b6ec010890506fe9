/**
 * The daemon's events as data: their type names and, per type, the fields of `data`. Pure types
 * and the list of names; the bus that numbers, keeps and replays them is `daemon/events.ts`, and
 * whoever emits one (the activator, the daemon's services) depends only on `EventSink`.
 *
 * MUST hold: every event's `data` names its `model` (watchers filter on it). `version` is a
 * version id, or `null` where no version applies (a label removed, a pull asked for by name).
 * A field is added here first, so the emitters, the RPC answers and the typed client agree.
 */
import type { VersionId } from './digest.js'

/** Every event type, in one place: the watch schema, `shoal watch --types` and its help use this list. */
export const EVENT_TYPES = ['label.moved', 'version.staged', 'version.removed', 'version.added', 'head.accepted', 'pull.started', 'pull.completed', 'pull.failed', 'pull.progress'] as const

export type EventType = typeof EVENT_TYPES[number]

export function isEventType (value: string): value is EventType {
  return (EVENT_TYPES as readonly string[]).includes(value)
}

/**
 * Which pull an event is about: one asked for over RPC (`via: 'request'`; `version` is `null` when
 * the request named no version), or one the activator started for a followed label (`label`).
 */
export type PullEventRef = { model: string, version: VersionId | null, via: 'request' } | { model: string, version: VersionId, label: string }

export interface EventPayloads {
  /** A local label switched to `version`, or was removed (`version: null`) by a removal head. */
  'label.moved': { model: string, label: string, version: VersionId | null, previous: VersionId | null, stamp: string }
  /** A complete version waits to be switched to: at `activateAt` (ms since the epoch), or on `shoal activate` when `null`. */
  'version.staged': { model: string, label: string, version: VersionId, current: VersionId | null, activateAt: number | null }
  /** A version left the store: `shoal rm`, `shoal gc`, or the disk quota. */
  'version.removed': { model: string, version: VersionId, via: 'rm' | 'gc' | 'quota' }
  /** A version became complete here: added from files, or pulled. */
  'version.added': { model: string, version: VersionId, via: 'add' | 'pull' }
  /** A head was accepted into the head book; `from` is the peer that sent it. */
  'head.accepted': { model: string, label: string, version: VersionId | null, via: 'local' | 'gossip' | 'sync' | 'disk', from?: string }
  'pull.started': PullEventRef
  'pull.completed': PullEventRef & { version: VersionId, ms: number }
  /**
   * A pull ended without its version (`outcome`, after `ms`), or was given up after `attempts`
   * failed attempts (`gaveUp`: its partial data is gone; `retry` is the command that starts it again).
   */
  'pull.failed': (PullEventRef & { outcome: 'failed' | 'cancelled', ms: number, error: string }) |
  { model: string, version: VersionId, outcome: 'failed', gaveUp: true, attempts: number, error: string, retry: string }
  /** Bytes of a followed label's pull so far, at most every `PULL_PROGRESS_EVENT_MS`. */
  'pull.progress': { model: string, version: VersionId, bytes: number, totalBytes: number, peers: number }
}

/** One event of each type, as the bus numbers and stamps it. */
type EventOfEachType = { [K in EventType]: {
  /** `<boot>-<seq>` */
  id: string
  seq: number
  type: K
  /** ms since the epoch */
  time: number
  data: EventPayloads[K]
} }[EventType]

/** One event of type `T`; `DaemonEvent` alone is the union of all types, narrowed by `type`. */
export type DaemonEvent<T extends EventType = EventType> = Extract<EventOfEachType, { type: T }>

/** Where events are sent: what a component that reports events depends on. */
export interface EventSink {
  emit: <T extends EventType>(type: T, data: EventPayloads[T]) => unknown
}
