/** The daemon's event types, in one place: the watch schema, `shoal watch --types` and its help use this list. */
export const WATCH_TYPES = ['label.moved', 'version.staged', 'version.removed', 'version.added', 'head.accepted', 'pull.started', 'pull.completed', 'pull.failed', 'pull.progress'] as const

export type EventType = typeof WATCH_TYPES[number]
