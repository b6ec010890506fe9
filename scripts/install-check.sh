#!/usr/bin/env bash
# The README's Install section, checked as a new user would follow it: pack the checkout, install
# the tarball into a fresh prefix, then run `shoal --version` and `shoal daemon` from PATH and stop
# the daemon by its pid. Needs the npm registry (the tarball's dependencies are installed).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
pid=""
cleanup () {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export ONNXRUNTIME_NODE_INSTALL=skip

npm pack --pack-destination "$work" --silent >/dev/null
npm install -g --prefix "$work/prefix" "$work"/shoal-*.tgz --no-audit --no-fund --loglevel=error
export PATH="$work/prefix/bin:$PATH"
[ "$(command -v shoal)" = "$work/prefix/bin/shoal" ] || { echo "install check: shoal is not the installed one on PATH" >&2; exit 1; }

want="$(node -p "require('./package.json').version")"
got="$(shoal --version)"
[ "$got" = "$want" ] || { echo "install check: shoal --version printed '$got', expected '$want'" >&2; exit 1; }

export SHOAL_HOME="$work/home"
shoal daemon --listen /ip4/127.0.0.1/tcp/0 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 1 300); do
  if shoal status --json >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "install check: the daemon exited:" >&2; cat "$work/daemon.log" >&2; exit 1; }
  sleep 0.1
done
shoal status --json | node -e "const s = JSON.parse(require('fs').readFileSync(0, 'utf8')); if (s.pid !== Number(process.argv[1])) { console.error('install check: status answered from another daemon'); process.exit(1) }" "$pid"
kill "$pid"
wait "$pid" || { echo "install check: the daemon did not stop cleanly:" >&2; cat "$work/daemon.log" >&2; exit 1; }
pid=""
echo "install check: shoal $got installed from the packed tarball; shoal --version and shoal daemon ran from PATH"
