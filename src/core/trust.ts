/**
 * Trust: which publisher keys may move which models.
 *
 * A rule is `{ key, models }`: the key may publish heads for every model whose name matches the
 * pattern `models`, where `*` stands for any run of characters (`*` alone: every model;
 * `org/*`: every model of `org`; `llama-*`). A head is trusted when at least one rule matches its
 * publisher and its model. There is no implicit trust beyond the rules; the daemon adds a rule for
 * the keys its own home created (see `heads/keyring.ts`).
 *
 * `allows` is what a node asks of every head it is offered, before it pays for the signature, so
 * it is cheap: one map lookup on the publisher key, then that key's compiled patterns. `epoch`
 * changes whenever the rules do, so callers can drop what they remembered under the old rules.
 */
import { InvalidInputError } from './errors.js'
import { checkPublisherKey, type PublisherKey } from './heads.js'

export interface TrustRule {
  key: PublisherKey
  /** Model-name pattern; `*` matches any characters. */
  models: string
}

const PATTERN = /^[A-Za-z0-9._\-/*]{1,256}$/

export function checkTrustRule (rule: { key: string, models: string }): TrustRule {
  let key: PublisherKey
  try {
    key = checkPublisherKey(rule.key)
  } catch (err) {
    throw new InvalidInputError((err as Error).message)
  }
  if (!PATTERN.test(rule.models)) {
    throw new InvalidInputError(`invalid model pattern "${rule.models.slice(0, 80)}": use model-name characters and * (e.g. "*", "org/*", "llama-*")`)
  }
  return { key, models: rule.models }
}

export function patternMatches (pattern: string, model: string): boolean {
  return compilePattern(pattern).test(model)
}

function compilePattern (pattern: string): RegExp {
  const parts = pattern.split('*').map(p => p.replace(/[.\\+?^${}()|[\]/-]/g, '\\$&'))
  return new RegExp(`^${parts.join('.*')}$`)
}

export class TrustPolicy {
  private rules: TrustRule[] = []
  private byKey = new Map<string, RegExp[]>()
  private generation = 0

  constructor (rules: TrustRule[] = []) {
    this.replace(rules)
  }

  allows (publisher: PublisherKey, model: string): boolean {
    const patterns = this.byKey.get(publisher)
    return patterns !== undefined && patterns.some(p => p.test(model))
  }

  /** Changes (increments) every time the rules are replaced. */
  get epoch (): number {
    return this.generation
  }

  list (): TrustRule[] {
    return [...this.rules]
  }

  replace (rules: TrustRule[]): void {
    const byKey = new Map<string, RegExp[]>()
    for (const r of rules) byKey.set(r.key, [...(byKey.get(r.key) ?? []), compilePattern(r.models)])
    this.rules = [...rules]
    this.byKey = byKey
    this.generation++
  }
}
