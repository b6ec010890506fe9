/**
 * The package's public API: the typed RPC client and the types of its answers.
 *
 * MUST hold: importing it loads only what a client needs (`rpc/client`, `rpc/errors`,
 * `rpc/target`, `rpc/range`, `core/errors` and Node built-ins); no store, daemon, config schema or polyfill.
 * `test/unit/rpc/client-entry.test.ts` walks its imports to keep it so.
 */
export { ShoalClient, type ShoalClientOptions, type LeaseHandle, type ReadOptions, type ReadStream, type WatchEvent, type WatchOptions } from './rpc/client.js'
export { clientTarget, defaultHome, type ClientTarget } from './rpc/target.js'
export { RpcError } from './rpc/errors.js'
export type { ShoalApi, ShowResult, ShowFile, StatusResult, ModelRow, ExportResult, LabelResult, PinResult, VersionResult, ResolveResult, LeaseRow, HeadRow, HeadHistoryRow, ActivateResult, KeyRow, TrustRow, EventsResult } from './rpc/api.js'
export type { SearchResult, SearchRow } from './store/search-index.js'
export type { VersionInfo } from './store/store.js'
export type { VerifyReport, VerifyProblem } from './store/verify.js'
export type { GcReport } from './store/gc.js'
export type { Metadata } from './core/metadata.js'
export type { DaemonEvent, EventPayloads, EventType } from './core/events.js'
