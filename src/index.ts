/** The package's public API: the typed RPC client and the types of its answers. */
import './polyfill.js'
export { ShoalClient, type ShoalClientOptions } from './rpc/client.js'
export { RpcError } from './rpc/errors.js'
export type { ShoalApi, ShowResult, ShowFile, StatusResult, ModelRow, ExportResult, LabelResult, PinResult, VersionResult } from './rpc/api.js'
export type { VersionInfo } from './store/store.js'
export type { VerifyReport, VerifyProblem } from './store/verify.js'
export type { GcReport } from './store/gc.js'
export type { Metadata } from './core/metadata.js'
