import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Two files at a time, also on a 2-core machine (vitest's default there is one: cores − 1),
    // in every project: a project with `fileParallelism: false` would put its files in a group
    // of their own that runs one file at a time after everything else. The e2e and faults files
    // spend most of their time waiting on daemons and links; each makes its own homes, ports,
    // mounts and namespaces, so two of them can run side by side.
    maxWorkers: 2,
    setupFiles: ['./test/setup.ts'],
    projects: [
      // Unit files share the cores with daemons of the e2e and faults files: 5 s (the default) is
      // too short for the heavier ones on a loaded machine.
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 30_000 } },
      { extends: true, test: { name: 'integration', include: ['test/integration/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 60_000 } },
      // Property-based fuzzing of every decoder and parser; `npm run fuzz` runs 10,000 cases each
      // (SHOAL_FUZZ_RUNS), the test command a smaller count (test/fuzz/fuzz.ts).
      { extends: true, test: { name: 'fuzz', include: ['test/fuzz/**/*.test.ts'], testTimeout: 600_000 } },
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 120_000 } },
      // Attacks and faults against real daemons (hostile peers, kill -9, disk full, partitions).
      { extends: true, test: { name: 'faults', include: ['test/faults/**/*.test.ts'], testTimeout: 300_000, hookTimeout: 120_000 } }
    ]
  }
})
