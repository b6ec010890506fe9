/** Exit codes, in one place: scripts can tell a usage error from an unreachable daemon. */
export const EXIT = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  UNREACHABLE: 3,
  NOT_FOUND: 4,
  CONFLICT: 5,
  INVALID: 6,
  /** `verify` found problems. */
  DAMAGED: 7,
  DISK_FULL: 8,
  /** Ctrl-C (128 + SIGINT), as shells report it. */
  INTERRUPTED: 130
} as const

export function exitCodeFor (code: string): number {
  switch (code) {
    case 'USAGE': return EXIT.USAGE
    case 'UNREACHABLE': return EXIT.UNREACHABLE
    case 'NOT_FOUND': return EXIT.NOT_FOUND
    case 'CONFLICT': case 'LOCKED': return EXIT.CONFLICT
    case 'INVALID_INPUT': case 'BAD_REQUEST': case 'MALFORMED_MODEL': case 'MALFORMED_DATA': case 'BAD_SIGNATURE': case 'UNTRUSTED': case 'PAYLOAD_TOO_LARGE': case 'RANGE_NOT_SATISFIABLE': return EXIT.INVALID
    case 'DIGEST_MISMATCH': return EXIT.DAMAGED
    case 'DISK_FULL': return EXIT.DISK_FULL
    default: return EXIT.ERROR
  }
}
