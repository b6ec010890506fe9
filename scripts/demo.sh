#!/usr/bin/env bash
# The demo from a fresh clone: installs, builds, runs scripts/demo.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
# onnxruntime-node (used by examples/) ships its CPU runtime; its install script would only fetch GPU builds.
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund --loglevel=error
npm run build:examples --silent
exec node --import tsx scripts/demo.ts "$@"
