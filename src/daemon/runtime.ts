/**
 * The V8 flags the daemon process runs with, and the check that it got them.
 *
 * `--max-semi-space-size=4` (MiB; on 64-bit V8 otherwise lets each of the young generation's two
 * semi-spaces grow to 16 MiB): the daemon's own objects are small, while the bytes it moves sit in
 * buffers outside the heap that the transport allocates and drops at a high rate. A young
 * generation that large holds ~24 MiB more heap, and the dropped buffers wait longer for the
 * scavenge that frees them. why: docs/decisions/0007-daemon-young-generation.md
 *
 * `--heap-growing-percent=100`: after a full collection the old generation may double before the
 * next one. V8 otherwise let it grow by ~10% (it judged marking cheap, and marks on helper threads
 * whose CPU it does not weigh): in a swarm a puller's ~31 MiB old generation was marked about every
 * 0.5 s and its collector took a quarter of its CPU. With this flag a puller runs 4–6 full
 * collections in a pull instead of 20–35, the swarm spends ~6–10% less CPU per GiB, and the memory
 * benchmark's peak does not rise. why: the same decision, "Since".
 *
 * V8 reads these flags only when the process starts (`v8.setFlagsFromString` later leaves the heap
 * as it is), so they travel with the command that starts node: the shebang of `cli/main.ts` (`shoal`
 * run as a program, as the container image does) and `scripts/lib/daemon-proc.ts` (tests,
 * benchmarks, the demo). A test keeps the shebang and this list in step.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--heap-growing-percent=100']

/**
 * The flags of {@link DAEMON_NODE_FLAGS} that node was started without, on its command line or in
 * `NODE_OPTIONS`. A flag given with another value counts as given: the operator chose it.
 */
export function missingNodeFlags (execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const name = (flag: string): string => flag.split('=')[0] ?? flag
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].map(name))
  return DAEMON_NODE_FLAGS.filter(flag => !given.has(name(flag)))
}
