import js from '@eslint/js'
import tseslint from 'typescript-eslint'

const escape = text => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/**
 * `@typescript-eslint/no-restricted-imports` for src/<name>/: of ours, only its own folder, the
 * folders in `may`, the files in `files` (`rpc/target.js`), the neutral util/ and version.ts
 * (unless `neutral: false`), and, as types only, the folders in `types` (`*`: any). `packages` are
 * forbidden outright. A folder with subfolders (protocol/) is checked at each depth.
 */
function layer (name, { may = [], types = [], files = [], packages = [], neutral = true }) {
  const allowed = [...may, ...(neutral ? ['util'] : [])].map(l => `${l}/`)
  const allowedFiles = [...files, ...(neutral ? ['version.js'] : [])]
  const message = `${name}/ may import ${[...may.map(l => `${l}/`), ...files, ...(types.length > 0 ? [`types of ${types.includes('*') ? 'the rest' : types.map(l => `${l}/`).join(', ')}`] : [])].join(', ') || 'nothing of ours'}${neutral ? ' (and the neutral util/, version.ts)' : ''} (docs/ARCHITECTURE.md, Layers)`
  const typeFolders = types.includes('*') ? [] : types.map(l => `${escape(l)}/`)
  const keep = [...allowed.map(escape), ...allowedFiles.map(f => `${escape(f)}$`), ...typeFolders]
  // `up` leads from a file to src/: '../' in src/<name>/, '../../' one folder deeper.
  const rule = up => {
    // Anything of ours outside the layer but what it may import (types only, with `*`)…
    const out = `^${escape(up)}${keep.length > 0 ? `(?!${keep.join('|')})` : ''}`
    const patterns = [{ regex: out, message, ...(types.includes('*') ? { allowTypeImports: true } : {}) }]
    // …and the folders it may take types from, at run time.
    if (typeFolders.length > 0) patterns.push({ regex: `^${escape(up)}(?:${typeFolders.join('|')})`, allowTypeImports: true, message })
    if (packages.length > 0) patterns.push({ group: packages, message: `${name}/ does no I/O of that kind (docs/ARCHITECTURE.md, Layers)` })
    return { '@typescript-eslint/no-restricted-imports': ['error', { patterns }] }
  }
  return [
    { files: [`src/${name}/*.ts`], rules: rule('../') },
    { files: [`src/${name}/*/**/*.ts`], rules: rule('../../') }
  ]
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'test/fixtures/**', 'src/protocol/*/pb/*.ts', 'examples/*/dist/**', '.tmp/**', 'bench-out/**', '.shoal-demo/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      'no-console': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }]
    }
  },
  // Layering, as the table of docs/ARCHITECTURE.md ("Layers") gives it: a file in src/<layer>/
  // may import its own folder and, of ours, only what its row lists (`types`: with `import type`
  // only). util/ (file-system helpers) and version.ts are neutral: every layer but core/ may use them.
  ...layer('core', { packages: ['node:fs', 'node:fs/*', 'node:net', 'node:http', 'level', 'libp2p', '@libp2p/*'], neutral: false }),
  ...layer('util', { may: ['core'], neutral: false }),
  ...layer('model', { may: ['core'], packages: ['libp2p', '@libp2p/*'] }),
  ...layer('store', { may: ['core'], packages: ['libp2p', '@libp2p/*'] }),
  ...layer('protocol', { may: ['core'] }),
  ...layer('heads', { may: ['core', 'protocol'], types: ['store'] }),
  ...layer('fetcher', { may: ['core'] }),
  ...layer('p2p', { may: ['core', 'protocol'], types: ['fetcher'] }),
  ...layer('ingest', { may: ['core', 'model', 'store'] }),
  ...layer('rpc', { may: ['core'], types: ['*'] }),
  ...layer('cli', { may: ['core', 'rpc'], types: ['*'] }),
  // Beyond its row: the client's paths (rpc/target stays with the client, which loads no config
  // schema) and the defaults rpc/ and fetcher/ keep for their own settings.
  ...layer('config', { may: ['core'], files: ['rpc/target.js', 'rpc/limits.js', 'fetcher/origin.js'] }),
  {
    // The store's parts (index, layout, read handles) stay inside src/store/: other layers use the
    // interfaces of store/api.ts (docs/ARCHITECTURE.md, "The store's API").
    files: ['src/**/*.ts'],
    ignores: ['src/store/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['**/store/internal.js', '**/store/index-db.js'], message: "the store's index and files are private to src/store/: use the interfaces of store/api.ts" }
      ] }]
    }
  },
  {
    // The bulk channel is plain TCP beside libp2p: node:net, node:crypto and core/ only.
    files: ['src/protocol/bulk/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['libp2p', '@libp2p/*', '@chainsafe/*', 'node:fs', 'node:fs/*'], message: 'the bulk channel is plain TCP beside libp2p' },
        { regex: String.raw`^\.\./(?!\.\./core/)`, message: 'the bulk channel imports only core/ of ours' }
      ] }]
    }
  },
  {
    files: ['src/cli/**/*.ts'],
    rules: { 'no-console': 'off' }
  },
  {
    files: ['scripts/**', 'test/**', 'examples/**'],
    rules: { 'no-console': 'off', '@typescript-eslint/no-non-null-assertion': 'off' }
  }
)
