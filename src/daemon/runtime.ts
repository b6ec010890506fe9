/**
 * The V8 flags the daemon process runs with, and the check that it got them.
 *
 * `--max-semi-space-size=4` (MiB; on 64-bit V8 otherwise lets each of the young generation's two
 * semi-spaces grow to 16 MiB): the daemon's own objects are small, while the bytes it moves sit in
 * buffers outside the heap that the transport allocates and drops at a high rate. A young
 * generation that large holds ~24 MiB more heap, and the dropped buffers wait longer for the
 * scavenge that frees them. why: docs/decisions/0007-daemon-young-generation.md
 *
 * V8 reads these flags only when the process starts (`v8.setFlagsFromString` later leaves the heap
 * as it is), so they travel with the command that starts node: the shebang of `cli/main.ts` (`shoal`
 * run as a program, as the container image does) and `scripts/lib/daemon-proc.ts` (tests,
 * benchmarks, the demo). A test keeps the shebang and this list in step.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4']

/**
 * The flags of {@link DAEMON_NODE_FLAGS} that node was started without, on its command line or in
 * `NODE_OPTIONS`. A flag given with another value counts as given: the operator chose it.
 */
export function missingNodeFlags (execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const name = (flag: string): string => flag.split('=')[0] ?? flag
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].map(name))
  return DAEMON_NODE_FLAGS.filter(flag => !given.has(name(flag)))
}
