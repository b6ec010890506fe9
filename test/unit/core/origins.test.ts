import { describe, expect, it } from 'vitest'
import { OriginAllowList, checkOriginEntry } from '../../../src/core/origins.js'

describe('OriginAllowList', () => {
  it('is empty by default and then allows nothing', () => {
    const none = new OriginAllowList()
    expect(none.empty).toBe(true)
    expect(none.allows('https://models.example.com/org/m/weights.bin')).toBe(false)
    expect(none.allows('http://127.0.0.1:8080/internal')).toBe(false)
  })

  it('a host entry allows that host on any port, or on the port it names', () => {
    const list = new OriginAllowList(['models.example.com', '10.0.0.5:8080', 'CDN.Example.ORG'])
    expect(list.allows('https://models.example.com/a')).toBe(true)
    expect(list.allows('http://models.example.com:9000/a')).toBe(true)
    expect(list.allows('http://10.0.0.5:8080/x')).toBe(true)
    expect(list.allows('http://10.0.0.5/x')).toBe(false)
    expect(list.allows('https://cdn.example.org/x')).toBe(true)
    expect(list.allows('https://evil.models.example.com/a')).toBe(false)
    expect(list.allows('https://models.example.com.evil.net/a')).toBe(false)
  })

  it('a URL prefix needs the same scheme, host and port, and a path under it at a segment boundary', () => {
    const list = new OriginAllowList(['https://models.example.com/org', 'http://10.0.0.5:8080/seed/'])
    expect(list.allows('https://models.example.com/org')).toBe(true)
    expect(list.allows('https://models.example.com/org/m/w.bin')).toBe(true)
    expect(list.allows('https://models.example.com:443/org/m')).toBe(true)
    expect(list.allows('https://models.example.com/org-private/w.bin')).toBe(false)
    expect(list.allows('http://models.example.com/org/m')).toBe(false)
    expect(list.allows('https://models.example.com:8443/org/m')).toBe(false)
    expect(list.allows('http://10.0.0.5:8080/seed/x')).toBe(true)
    expect(list.allows('http://10.0.0.5:8080/seedling')).toBe(false)
  })

  it('compares normalised URLs: dot segments, encoded dots and IPv4 spellings do not escape a prefix', () => {
    const list = new OriginAllowList(['https://models.example.com/org/', '127.0.0.1:9000'])
    expect(list.allows('https://models.example.com/org/../internal')).toBe(false)
    expect(list.allows('https://models.example.com/org/%2e%2e/internal')).toBe(false)
    expect(list.allows('http://0x7f.0.0.1:9000/x')).toBe(true)
    expect(list.allows('http://2130706433:9001/x')).toBe(false)
  })

  it('never allows credentials, other schemes or what is not a URL', () => {
    const list = new OriginAllowList(['models.example.com'])
    expect(list.allows('https://user:pass@models.example.com/a')).toBe(false)
    expect(list.allows('ftp://models.example.com/a')).toBe(false)
    expect(list.allows('file:///etc/passwd')).toBe(false)
    expect(list.allows('not a url')).toBe(false)
    expect(list.allows(`https://models.example.com/${'a'.repeat(5000)}`)).toBe(false)
  })

  it('refuses entries that are neither a host nor an http(s) URL prefix, saying what to write', () => {
    for (const bad of ['', 'ftp://x.example.com/', 'https://u:p@x.example.com/', 'https://x.example.com/?q=1', 'not a host', 'x.example.com:99999']) {
      expect(() => checkOriginEntry(bad), bad).toThrow(expect.objectContaining({ name: 'InvalidInputError', message: expect.stringContaining('use a host (models.example.com, 10.0.0.5:8080) or an http(s) URL prefix') }))
    }
    expect(checkOriginEntry('[::1]:8080')).toBe('[::1]:8080')
  })
})
