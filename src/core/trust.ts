/**
 * Trust: which publisher keys may move which models.
 *
 * A rule is `{ key, models }`: the key may publish heads for every model whose name matches the
 * pattern `models`, where `*` stands for any run of characters (`*` alone: every model;
 * `org/*`: every model of `org`; `llama-*`). A head is trusted when at least one rule matches its
 * publisher and its model. There is no implicit trust beyond the rules; the daemon adds a rule for
 * the keys its own home created (see `heads/keyring.ts`).
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
  const parts = pattern.split('*').map(p => p.replace(/[.\\+?^${}()|[\]/-]/g, '\\$&'))
  return new RegExp(`^${parts.join('.*')}$`).test(model)
}

export class TrustPolicy {
  constructor (private rules: TrustRule[] = []) {}

  allows (publisher: PublisherKey, model: string): boolean {
    return this.rules.some(r => r.key === publisher && patternMatches(r.models, model))
  }

  list (): TrustRule[] {
    return [...this.rules]
  }

  replace (rules: TrustRule[]): void {
    this.rules = [...rules]
  }
}
