#!/usr/bin/env -S node --max-semi-space-size=4 --heap-growing-percent=100
/**
 * `shoal`: the admin CLI binary. The program itself (commands, output, exit codes) is
 * `program.ts`; this file gives it the real process: stdout, stderr, the environment, Ctrl-C, the
 * daemon's socket, and the daemon itself for `shoal daemon`.
 */
import { ShoalClient } from '../rpc/client.js'
import { runCli, type CliIo, type DaemonOptions } from './program.js'

const io: CliIo = {
  out: text => { process.stdout.write(text) },
  err: text => { process.stderr.write(text) },
  write: async bytes => {
    // A reader that closed the pipe (`shoal cat … | head -c 8`) has all it wanted: stop quietly, as cat does.
    if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'EPIPE') process.exit(0) })
    if (process.stdout.write(bytes)) return
    // A closed pipe (`shoal cat … | head`) never drains: its 'error' ends the wait too.
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => { process.stdout.off('drain', done); process.stdout.off('error', done); if (err !== undefined) reject(err); else resolve() }
      process.stdout.once('drain', done)
      process.stdout.once('error', done)
    })
  },
  env: process.env,
  stdoutTTY: process.stdout.isTTY === true,
  stdinTTY: process.stdin.isTTY === true,
  confirm: async question => {
    const { createInterface } = await import('node:readline/promises')
    const rl = createInterface({ input: process.stdin, output: process.stderr })
    try {
      return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim())
    } finally {
      rl.close()
    }
  },
  stderrTTY: process.stderr.isTTY === true,
  connect: target => new ShoalClient(target),
  onInterrupt: handler => {
    process.on('SIGINT', handler)
    return () => { process.off('SIGINT', handler) }
  },
  daemon: async (o: DaemonOptions) => {
    await import('../polyfill.js')
    const { loadConfig } = await import('../config/config.js')
    const { Daemon } = await import('../daemon/daemon.js')
    const config = await loadConfig({
      ...(o.home !== undefined ? { home: o.home } : {}),
      overrides: {
        ...(o.socket !== undefined ? { socket: o.socket } : {}),
        ...(o.logLevel !== undefined ? { logLevel: o.logLevel } : {}),
        ...(o.strategy !== undefined ? { strategy: o.strategy } : {}),
        ...(o.mdns === true ? { mdns: true } : {}),
        listen: o.listen,
        peers: o.peers,
        follow: o.follow
      }
    })
    await new Daemon(config).runUntilSignalled()
  }
}

process.exitCode = await runCli(process.argv.slice(2), io)
