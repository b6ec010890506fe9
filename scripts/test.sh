#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs, builds, type-checks, lints, runs
# unit, integration and end-to-end tests (real daemon processes; the e2e disk-full test mounts a
# small tmpfs and needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
# onnxruntime-node (used by examples/) ships its CPU runtime; its install script would only fetch GPU builds.
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund --loglevel=error
npm test
