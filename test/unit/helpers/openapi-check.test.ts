/**
 * The check every e2e request goes through (`test/helpers/openapi-check.ts`), against the
 * committed document: what it does not describe is refused naming what is wrong, and what it
 * describes passes.
 */
import { beforeAll, describe, expect, it } from 'vitest'
import { checkRequests } from '../../e2e/helpers.js'
import { OpenApiCheck } from '../../helpers/openapi-check.js'
import type { RecordedRequest } from '../../helpers/rpc-recorder.js'

const json = { 'content-type': 'application/json' }

describe('the OpenAPI request check', () => {
  let check: OpenApiCheck
  beforeAll(async () => { check = await OpenApiCheck.load() })

  it('passes requests the document describes: query, body, a path parameter with slashes, a range header', () => {
    expect(check.check({ method: 'GET', url: '/v1/show?ref=org%2Ftiny%40prod' })).toEqual([])
    expect(check.check({ method: 'GET', url: '/v1/events?since=abc123-4&limit=10' })).toEqual([])
    expect(check.check({ method: 'POST', url: '/v1/gc', headers: json, body: '{"dryRun":true}' })).toEqual([])
    expect(check.check({ method: 'GET', url: '/v1/versions/org%2Ftiny%40prod/files/sub/model.safetensors', headers: { range: 'bytes=8-15' } })).toEqual([])
    expect(check.check({ method: 'GET', url: '/v1/watch?types=label.moved', headers: { 'last-event-id': 'abc123-4' } })).toEqual([])
  })

  it('refuses an unknown path, naming it', () => {
    expect(check.check({ method: 'GET', url: '/v1/nope?x=1' })).toEqual(['no path in the document matches /v1/nope'])
  })

  it('refuses a method the path does not take, naming the ones it does', () => {
    expect(check.check({ method: 'DELETE', url: '/v1/status' })).toEqual(['the document has no DELETE for /v1/status (only GET)'])
  })

  it('refuses a missing required query parameter, an undeclared one and a value outside its schema', () => {
    expect(check.check({ method: 'GET', url: '/v1/show' })).toEqual(['required query parameter ref is missing'])
    expect(check.check({ method: 'GET', url: '/v1/show?ref=a&verbose=1' })).toEqual(['query parameter verbose is not in the document (it declares ref for GET /v1/show)'])
    expect(check.check({ method: 'GET', url: '/v1/events?limit=x' })).toEqual(['query parameter limit must be integer (sent "x")'])
    expect(check.check({ method: 'GET', url: '/v1/events?limit=0' })).toEqual(['query parameter limit must be >= 1 (sent 0)'])
    expect(check.check({ method: 'GET', url: '/v1/events?limit=1&limit=2' })).toEqual(['query parameter limit is given 2 times; the document takes one value'])
  })

  it('refuses a body of the wrong type, an unknown or missing field, JSON that is not, and a body where none is described', () => {
    expect(check.check({ method: 'POST', url: '/v1/gc', headers: json, body: '{"dryRun":"yes"}' })).toEqual(['the body at dryRun must be boolean (sent {"dryRun":"yes"})'])
    expect(check.check({ method: 'POST', url: '/v1/gc', headers: json, body: '[1]' })).toEqual(['the body must be object (sent [1])'])
    expect(check.check({ method: 'POST', url: '/v1/gc', headers: json, body: '{"bogus":1}' })).toEqual(['the body must not have the property "bogus" (sent {"bogus":1})'])
    expect(check.check({ method: 'POST', url: '/v1/pins', headers: json, body: '{}' })).toEqual(['the body must have the property "ref" (sent {})'])
    expect(check.check({ method: 'POST', url: '/v1/gc', headers: json, body: '{"dryRun": tru' })[0]).toMatch(/^the body is not valid JSON \(.+\): \{"dryRun": tru$/)
    expect(check.check({ method: 'POST', url: '/v1/pins' })).toEqual(['has no body, but POST /v1/pins requires one (application/json)'])
    expect(check.check({ method: 'POST', url: '/v1/gc', headers: { 'content-type': 'text/plain' }, body: '{}' })).toEqual(['sends content-type text/plain; POST /v1/gc takes application/json'])
    expect(check.check({ method: 'GET', url: '/v1/status', body: '{}' })).toEqual(['sends a body ({}), but the document describes none for GET /v1/status'])
  })

  it('refuses a path parameter that is not percent-encoding, and a header outside its schema', () => {
    expect(check.check({ method: 'GET', url: '/v1/versions/%E0%A4%A/files/a' })).toEqual(['path parameter id (%E0%A4%A) is not valid percent-encoding'])
    expect(check.check({ method: 'GET', url: '/v1/versions/v/files/a', headers: { range: 'lines=1-2' } })[0]).toMatch(/^header Range must match pattern .+ \(sent "lines=1-2"\)$/)
  })

  it('lists each recorded request that breaks the document, and each one marked invalid that does not', () => {
    const recorded = (r: Partial<RecordedRequest>): RecordedRequest => ({ method: 'GET', url: '/v1/status', headers: {}, body: Buffer.alloc(0), bodyBytes: 0, socket: '/tmp/h/home/shoal.sock', status: 200, ...r })
    const problems = checkRequests(check, [
      recorded({}),
      recorded({ url: '/v1/show', status: 400 }),
      recorded({ url: '/v1/nope', status: 404, invalid: 'an unknown path' }),
      recorded({ url: '/v1/models', invalid: 'a mistaken mark' })
    ], '/tmp/h')
    expect(problems).toEqual([
      'GET /v1/show (to …/home/shoal.sock, answered 400): required query parameter ref is missing',
      'GET /v1/models (to …/home/shoal.sock, answered 200): marked invalid (a mistaken mark), but the document accepts it: the document is too loose, or the mark is wrong'
    ])
  })
})
