/**
 * What a node does with heads: bring its local labels (`refs/<label>`) to the versions the heads
 * name, when and as the heads say.
 *
 * For each head the book holds, `reconcile` walks this ladder (one label at a time, never two
 * steps for one label at once):
 * 1. the local label already points at the head's version → `active`;
 * 2. the version is not complete here: if this node follows the label (`FollowRules`), pull it
 *    (`pulling`; on failure `failed`, retried after `PULL_RETRY_MS`, doubled for each failure of
 *    the same head in a row up to `PULL_RETRY_MAX_MS`; never when the pull was cancelled or given
 *    up, whose data is gone: a new head, a restart or `shoal resolve --ensure` tries again), else
 *    leave it (`remote`);
 * 3. the version is complete and verified: work out when to switch (`activationTime`: hot at once,
 *    cold at `at` or by hand, plus this node's jitter). Not yet → `staged` (event
 *    `version.staged` for cold heads) with a timer; due → switch the label (`Store.setLabel`: the
 *    snapshot exists already, the ref file is replaced by rename, then the index) → `active`,
 *    event `label.moved`.
 * A label that is not set here yet takes its first version as soon as it is complete (cold or
 * jitter only delay a switch away from a version in use). A head with `version: null` removes the
 * local label. A node that does not follow a label still
 * switches it when it happens to hold the version, so a label means the same thing everywhere the
 * version is present.
 *
 * MUST hold: a label never points at a version that is not complete and verified on this node.
 */
import { activationTime, headKey, type SignedHead } from '../core/heads.js'
import type { VersionId } from '../core/digest.js'
import { ConflictError, NotFoundError, PullCancelledError, PullGivenUpError } from '../core/errors.js'
import { patternMatches } from '../core/trust.js'
import type { EventSink } from '../core/events.js'
import type { BookLogger, HeadBook } from './book.js'

/**
 * Wait before pulling again after a followed pull failed. Short, because the common failure is
 * transient: a head crosses the fleet by gossip in milliseconds, and a follower whose neighbours
 * are themselves still pulling finds no peer with the manifest on its first try (in a sparse
 * fleet, most followers more than one hop from a holder do), and the wait is paid once per hop. A
 * retry only asks the connected peers (and the DHT, when on) for the manifest again.
 * @default 5 s
 */
export const PULL_RETRY_MS = 5_000
/**
 * Longest wait between retries of one head's pull: each failure in a row doubles the wait from
 * `PULL_RETRY_MS`, so a pull that keeps failing (no peer has the version, a full disk) costs a
 * request round every few minutes, not every 5 s.
 * @default 5 min
 */
export const PULL_RETRY_MAX_MS = 5 * 60_000

export type SlotState = 'active' | 'pulling' | 'staged' | 'waiting' | 'failed' | 'remote'

export interface LabelSlot {
  model: string
  label: string
  head: SignedHead
  state: SlotState
  /** Local version of the label (what `refs/<label>` says), if any. */
  local?: VersionId
  /** When the node may switch (ms), for `staged` and `waiting`. */
  activateAt?: number
  error?: string
  /** Failed pulls of this head in a row (the retry waits grow with it). */
  failures?: number
  completedAt?: number
  stagedEmitted?: boolean
  timer?: NodeJS.Timeout
}

/** The label storage the activator drives (the store). */
export interface LabelTarget {
  current: (model: string, label: string) => Promise<VersionId | undefined>
  set: (model: string, label: string, version: VersionId) => Promise<void>
  remove: (model: string, label: string) => Promise<void>
  /** True when every file of the version is stored and verified here. */
  isComplete: (version: VersionId) => Promise<boolean>
}

/** Pulls a followed label's version; reports the pull (its `pull.*` events) itself. */
export interface VersionPuller {
  pull: (model: string, label: string, version: VersionId) => Promise<void>
}

/** `name@label` patterns this node follows; `*` in either part matches anything. */
export class FollowRules {
  private readonly rules: Array<{ model: string, label: string }>

  constructor (specs: string[]) {
    this.rules = specs.map(s => {
      const at = s.lastIndexOf('@')
      return at < 0 ? { model: s, label: '*' } : { model: s.slice(0, at), label: s.slice(at + 1) }
    })
  }

  follows (model: string, label: string): boolean {
    return this.rules.some(r => patternMatches(r.model, model) && patternMatches(r.label, label))
  }

  list (): string[] {
    return this.rules.map(r => `${r.model}@${r.label}`)
  }
}

export class Activator {
  private readonly slots = new Map<string, LabelSlot>()
  private readonly chains = new Map<string, Promise<void>>()
  private unsubscribe?: () => void
  private stopped = false
  private reconcilingAll = false

  constructor (private readonly deps: {
    book: HeadBook
    labels: LabelTarget
    puller: VersionPuller
    events: EventSink
    follows: FollowRules
    nodeId: string
    log: BookLogger
    clock?: () => number
    /** Called after every switch (quota GC, …). */
    afterSwitch?: () => void
  }) {}

  async start (): Promise<void> {
    this.unsubscribe = this.deps.book.onAccepted(a => {
      this.deps.events.emit('head.accepted', { model: a.head.head.model, label: a.head.head.label, version: a.head.head.version, via: a.via, ...(a.from !== undefined ? { from: a.from } : {}) })
      // A head published here is applied by its publisher (`reconcileNow`, which answers only once
      // it is applied): stepping it here too would run the same step twice.
      if (a.via !== 'local') void this.reconcile(a.head.head.model, a.head.head.label)
    })
    for (const head of this.deps.book.list()) void this.reconcile(head.head.model, head.head.label)
  }

  stop (): void {
    this.stopped = true
    this.unsubscribe?.()
    for (const slot of this.slots.values()) clearTimeout(slot.timer)
  }

  slot (model: string, label: string): LabelSlot | undefined {
    return this.slots.get(headKey(model, label))
  }

  follows (model: string, label: string): boolean {
    return this.deps.follows.follows(model, label)
  }

  /** Brings `model@label` one step closer to its head (see the module doc). */
  async reconcile (model: string, label: string): Promise<void> {
    await this.serial(model, label, async () => { await this.step(model, label) }).catch(err => {
      this.deps.log.warn({ model, label, err: (err as Error).message }, 'label reconcile failed')
    })
  }

  /**
   * Brings every label the book holds one step closer to its head: after the store takes writes
   * again, a switch the disk refused is tried again. One pass at a time: a pass asked for while one
   * runs is dropped (a switch that fails again trips the store, and its next reopen must not start
   * more).
   */
  async reconcileAll (): Promise<void> {
    if (this.reconcilingAll) return
    this.reconcilingAll = true
    try {
      await Promise.allSettled(this.deps.book.list().map(async head => { await this.reconcile(head.head.model, head.head.label) }))
    } finally {
      this.reconcilingAll = false
    }
  }

  /**
   * Like `reconcile`, but a step that fails (a switch the store could not write) is thrown to the
   * caller instead of logged: a local publish answers with it.
   */
  async reconcileNow (model: string, label: string): Promise<void> {
    await this.serial(model, label, async () => { await this.step(model, label) })
  }

  /** Switches a staged label now (`shoal activate`). */
  async activate (model: string, label: string): Promise<{ version: VersionId | null, previous: VersionId | null }> {
    const head = this.deps.book.get(model, label)
    if (head === undefined) throw new NotFoundError(`no head for ${model}@${label}`)
    const target = head.head.version
    return await this.serial(model, label, async () => {
      const local = await this.deps.labels.current(model, label)
      if (target === null || local === target) return { version: local ?? null, previous: local ?? null }
      if (!await this.deps.labels.isComplete(target)) {
        const slot = this.slots.get(headKey(model, label))
        throw new ConflictError(`${model}@${label} → ${target} is not complete on this node yet (${slot?.state ?? 'not pulled'}${slot?.error !== undefined ? `: ${slot.error}` : ''}); wait for version.staged or pull it`)
      }
      await this.switchTo(model, label, head, local)
      return { version: target, previous: local ?? null }
    })
  }

  /** Runs `fn` after every step already queued for this label: one step per label at a time. */
  private async serial<T> (model: string, label: string, fn: () => Promise<T>): Promise<T> {
    const key = headKey(model, label)
    const run = (this.chains.get(key) ?? Promise.resolve()).then(fn)
    const settled = run.then(() => {}, () => {})
    this.chains.set(key, settled)
    try {
      return await run
    } finally {
      if (this.chains.get(key) === settled) this.chains.delete(key)
    }
  }

  private async step (model: string, label: string): Promise<void> {
    if (this.stopped) return
    const head = this.deps.book.get(model, label)
    if (head === undefined) return
    const key = headKey(model, label)
    let slot = this.slots.get(key)
    if (slot === undefined || slot.head.id !== head.id) {
      if (slot !== undefined) clearTimeout(slot.timer)
      slot = { model, label, head, state: 'remote' }
      this.slots.set(key, slot)
    }
    const local = await this.deps.labels.current(model, label)
    if (local !== undefined) slot.local = local
    else delete slot.local
    const target = head.head.version
    if (target === null) {
      if (local !== undefined) {
        await this.deps.labels.remove(model, label)
        delete slot.local
        this.deps.events.emit('label.moved', { model, label, version: null, previous: local, stamp: stampText(head) })
      }
      slot.state = 'active'
      return
    }
    if (local === target) {
      slot.state = 'active'
      clearTimeout(slot.timer)
      return
    }
    if (!await this.deps.labels.isComplete(target)) {
      if (!this.follows(model, label)) { slot.state = 'remote'; return }
      if (slot.state === 'pulling') return
      slot.state = 'pulling'
      delete slot.error
      const pulling = slot
      const failed = (message: string, final = false): void => {
        if (this.slots.get(key) !== pulling || pulling.state !== 'pulling') return
        pulling.state = 'failed'
        clearTimeout(pulling.timer)
        if (final) {
          pulling.error = `${message} (to pull it and move the label: shoal resolve --ensure ${model}@${label})`
          this.deps.log.warn({ model, label, version: target, err: message }, 'pull for a followed label was cancelled or given up; not retrying')
          return
        }
        pulling.error = message
        pulling.failures = (pulling.failures ?? 0) + 1
        const wait = Math.min(PULL_RETRY_MAX_MS, PULL_RETRY_MS * 2 ** (pulling.failures - 1))
        this.deps.log.warn({ model, label, version: target, err: message, retryInMs: wait }, 'pull for a followed label failed; retrying later')
        pulling.timer = setTimeout(() => { void this.reconcile(model, label) }, wait)
      }
      this.deps.puller.pull(model, label, target).then(
        async () => {
          // A pull that ends without the version complete (removed meanwhile, say) must not leave
          // the slot 'pulling' for good: that state is what keeps a second pull from starting.
          if (!await this.deps.labels.isComplete(target)) failed('the pull finished but the version is not complete here')
          else void this.reconcile(model, label)
        },
        err => {
          failed((err as Error).message, err instanceof PullGivenUpError || err instanceof PullCancelledError)
        }
      ).catch(err => {
        this.deps.log.warn({ model, label, version: target, err: (err as Error).message }, 'checking a finished pull failed')
      })
      return
    }
    const now = this.now()
    slot.completedAt ??= now
    // With nothing in place yet there is nothing to switch away from: the first version of a label
    // is put in place as soon as it is complete, whatever the activation says.
    const due = local === undefined ? now : activationTime(head, this.deps.nodeId, slot.completedAt)
    if (due === undefined || due > now) {
      slot.state = head.head.activation.mode === 'cold' ? 'staged' : 'waiting'
      if (due !== undefined) slot.activateAt = due
      if (head.head.activation.mode === 'cold' && slot.stagedEmitted !== true) {
        slot.stagedEmitted = true
        this.deps.events.emit('version.staged', { model, label, version: target, current: local ?? null, activateAt: due ?? null })
      }
      clearTimeout(slot.timer)
      if (due !== undefined) slot.timer = setTimeout(() => { void this.reconcile(model, label) }, Math.min(due - now, 2 ** 31 - 1))
      return
    }
    await this.switchTo(model, label, head, local)
  }

  private async switchTo (model: string, label: string, head: SignedHead, local: VersionId | undefined): Promise<void> {
    const target = head.head.version
    if (target === null) return
    await this.deps.labels.set(model, label, target)
    const slot = this.slots.get(headKey(model, label))
    if (slot !== undefined) {
      clearTimeout(slot.timer)
      slot.state = slot.head.id === head.id ? 'active' : slot.state
      slot.local = target
    }
    this.deps.log.info({ model, label, version: target, previous: local }, 'label moved')
    this.deps.events.emit('label.moved', { model, label, version: target, previous: local ?? null, stamp: stampText(head) })
    this.deps.afterSwitch?.()
  }

  private now (): number {
    return (this.deps.clock ?? Date.now)()
  }
}

function stampText (head: SignedHead): string {
  return `${head.head.stamp.wall}.${head.head.stamp.counter}`
}
