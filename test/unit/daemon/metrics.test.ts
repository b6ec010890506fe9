/**
 * Metrics with in-memory sources: totals other components keep are counters that only grow, and
 * per-peer series are of connected peers: one that disconnects loses them at the next scrape.
 */
import { describe, expect, it } from 'vitest'
import { EventBus } from '../../../src/daemon/events.js'
import { Metrics } from '../../../src/daemon/metrics.js'
import { MetricsFeed } from '../../../src/daemon/metrics-feed.js'

function metrics (state: { connected: string[], received: Array<{ peer: string, bytes: number, wireBytes?: number }>, accepted: number, encoder?: { encoded: number, hits: number, raw: number, encodeMs: number } }): Metrics {
  return new Metrics({
    peers: () => state.connected.length,
    leases: () => 0,
    pullsInFlight: () => 0,
    store: async () => ({ bytes: 0, blobs: 0, versions: 0 }),
    heads: () => ({ accepted: state.accepted, duplicate: 0, stale: 0, future: 0, rejected: { malformed: 0, signature: 0, untrusted: 0 }, signatureChecks: 0, dropped: 0, syncsRefused: 0 }),
    bytesReceivedByPeer: () => state.received.map(p => ({ ...p, wireBytes: p.wireBytes ?? p.bytes })),
    encoder: () => state.encoder,
    connectedPeers: () => state.connected,
    labels: async () => [{ model: 'm', label: 'prod', version: 'bafyv1' }],
    build: { version: '1.2.3', node: 'v24.0.0' }
  })
}

const value = (text: string, series: string): number | undefined => {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

describe('metrics', () => {
  it('per-peer series belong to connected peers; a peer that goes loses them', async () => {
    const state = { connected: ['A', 'B'], received: [{ peer: 'A', bytes: 100 }, { peer: 'B', bytes: 50 }], accepted: 1 }
    const m = metrics(state)
    m.bytesSent.inc({ peer: 'A' }, 7)
    m.bytesSent.inc({ peer: 'B' }, 9)
    let text = (await m.text()).body
    expect(value(text, 'shoal_bytes_received_total{peer="A"}')).toBe(100)
    expect(value(text, 'shoal_bytes_received_total{peer="B"}')).toBe(50)
    state.connected = ['B']
    state.received = [{ peer: 'A', bytes: 100 }, { peer: 'B', bytes: 80 }]
    text = (await m.text()).body
    expect(text).not.toContain('peer="A"')
    expect(value(text, 'shoal_bytes_received_total{peer="B"}')).toBe(80)
    expect(value(text, 'shoal_bytes_sent_total{peer="B"}')).toBe(9)
  })

  it('wire bytes beside raw bytes, by peer both ways, and what the wire encoder did', async () => {
    const state = { connected: ['A'], received: [{ peer: 'A', bytes: 1000, wireBytes: 670 }], accepted: 0, encoder: { encoded: 4, hits: 20, raw: 1, encodeMs: 1500 } }
    const m = metrics(state)
    const feed = new MetricsFeed({ events: new EventBus(), metrics: () => m, modelOf: async () => undefined })
    feed.sent('A', 400, [], 300)
    let text = (await m.text()).body
    expect(value(text, 'shoal_bytes_received_total{peer="A"}')).toBe(1000)
    expect(value(text, 'shoal_wire_bytes_received_total{peer="A"}')).toBe(670)
    expect(value(text, 'shoal_bytes_sent_total{peer="A"}')).toBe(400)
    expect(value(text, 'shoal_wire_bytes_sent_total{peer="A"}')).toBe(300)
    expect(value(text, 'shoal_codec_blocks_encoded_total')).toBe(4)
    expect(value(text, 'shoal_codec_blocks_reused_total')).toBe(20)
    expect(value(text, 'shoal_codec_encode_seconds_total')).toBe(1.5)
    state.encoder = { encoded: 6, hits: 20, raw: 1, encodeMs: 1500 }
    state.received = [{ peer: 'A', bytes: 2000, wireBytes: 1340 }]
    text = (await m.text()).body
    expect(value(text, 'shoal_codec_blocks_encoded_total')).toBe(6)
    expect(value(text, 'shoal_wire_bytes_received_total{peer="A"}')).toBe(1340)
  })

  it('heads by outcome is a counter that follows the book; build and label info are 1', async () => {
    const state = { connected: [], received: [], accepted: 3 }
    const m = metrics(state)
    expect(value((await m.text()).body, 'shoal_heads_total{outcome="accepted",reason=""}')).toBe(3)
    state.accepted = 5
    const text = (await m.text()).body
    expect(value(text, 'shoal_heads_total{outcome="accepted",reason=""}')).toBe(5)
    expect(text).toMatch(/^# TYPE shoal_heads_total counter$/m)
    expect(value(text, 'shoal_build_info{version="1.2.3",node="v24.0.0"}')).toBe(1)
    expect(value(text, 'shoal_label_version_info{model="m",label="prod",version="bafyv1"}')).toBe(1)
  })
})

describe('MetricsFeed', () => {
  it('counts events, and bytes sent per model with one name lookup per version (bytes sent while it runs included); stops with stop', async () => {
    const m = metrics({ connected: ['A'], received: [], accepted: 0 })
    const events = new EventBus()
    let lookups = 0
    let answer: (name: string) => void = () => {}
    const feed = new MetricsFeed({ events, metrics: () => m, modelOf: async () => { lookups++; return await new Promise<string>(resolve => { answer = resolve }) } })
    feed.start()
    events.emit('label.moved', { model: 'm', label: 'prod', version: 'bafyv1', previous: null, stamp: '1-0' })
    feed.sent('A', 10, ['bafyv1'])
    feed.sent('A', 5, ['bafyv1'])
    answer('org/m')
    await expect.poll(async () => value((await m.text()).body, 'shoal_model_bytes_sent_total{model="org/m"}')).toBe(15)
    feed.sent('A', 1, ['bafyv1'])
    // Sent to a peer that wants several versions: not counted under any model.
    feed.sent('A', 100, ['bafyv1', 'bafyv2'])
    feed.rejected('corrupt')
    feed.received('org/m', 64)
    const text = (await m.text()).body
    expect(value(text, 'shoal_model_bytes_sent_total{model="org/m"}')).toBe(16)
    expect(value(text, 'shoal_bytes_sent_total{peer="A"}')).toBe(116)
    expect(value(text, 'shoal_label_moves_total')).toBe(1)
    expect(value(text, 'shoal_chunks_rejected_total{reason="corrupt"}')).toBe(1)
    expect(value(text, 'shoal_model_bytes_received_total{model="org/m"}')).toBe(64)
    expect(lookups).toBe(1)
    feed.stop()
    events.emit('label.moved', { model: 'm', label: 'prod', version: 'bafyv2', previous: 'bafyv1', stamp: '2-0' })
    expect(value((await m.text()).body, 'shoal_label_moves_total')).toBe(1)
  })
})
