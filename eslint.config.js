import js from '@eslint/js'
import tseslint from 'typescript-eslint'

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
  {
    // Layering: core/ is pure; model/ and store/ build only on core/.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['../store/*', '../model/*', '../rpc/*', '../cli/*', '../daemon/*', '../ingest/*', '../config/*', 'node:fs', 'node:fs/*', 'node:net', 'node:http', 'level', 'libp2p', '@libp2p/*'] }]
    }
  },
  {
    files: ['src/model/**/*.ts', 'src/store/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['../rpc/*', '../cli/*', '../daemon/*', '../ingest/*', 'libp2p', '@libp2p/*'] }]
    }
  },
  {
    // The bulk channel is plain TCP beside libp2p: node:net, node:crypto and core/ only.
    files: ['src/protocol/bulk/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['libp2p', '@libp2p/*', '@chainsafe/*', '../framing.js', '../chunks/*', '../heads/*', '../manifest/*', '../../store/*', '../../fetcher/*', '../../p2p/*', '../../daemon/*', '../../rpc/*', '../../cli/*', '../../config/*', 'node:fs', 'node:fs/*'] }]
    }
  },
  {
    files: ['src/cli/**/*.ts'],
    rules: {
      'no-console': 'off',
      // The CLI reaches the daemon only through the RPC client; it may share types, not code.
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: [{ group: ['../store/*', '../ingest/*', '../model/*', '../daemon/service.js'], allowTypeImports: true, message: 'the CLI talks to the daemon through rpc/client only' }] }]
    }
  },
  {
    files: ['scripts/**', 'test/**', 'examples/**'],
    rules: { 'no-console': 'off', '@typescript-eslint/no-non-null-assertion': 'off' }
  }
)
