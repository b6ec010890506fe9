#!/bin/sh
# Entry point for the compose topology (docker/compose.yaml). Roles:
#
#   publisher  start `shoal daemon`, then write what the nodes need to find and trust it to
#              $SHOAL_SHARED/publisher.json: its peer id, its dialable address
#              (/dns4/$SHOAL_PUBLIC_HOST/tcp/4077/p2p/<id>) and its publisher public key.
#   node       wait for that file, write $SHOAL_HOME/config.json (peers: the publisher; trust: its
#              key for $SHOAL_TRUST_MODELS; follow: $SHOAL_FOLLOW), then exec `shoal daemon`.
#
# Extra arguments go to `shoal daemon`. SIGTERM reaches the daemon, which stops cleanly.
set -eu

role="${1:-node}"
[ "$#" -gt 0 ] && shift
shared="${SHOAL_SHARED:-/shared}"
listen="${SHOAL_LISTEN:-/ip4/0.0.0.0/tcp/4077}"
port="${listen##*/}"
info="$shared/publisher.json"

# Reads a field of the JSON document on stdin (no jq in the slim image; node is there).
field() { node -e 'let s="";process.stdin.on("data",d=>{s+=d}).on("end",()=>{process.stdout.write(String(JSON.parse(s)[process.argv[1]]))})' "$1"; }

case "$role" in
  publisher)
    rm -f "$info"
    shoal daemon --listen "$listen" "$@" &
    daemon=$!
    trap 'kill -TERM "$daemon" 2>/dev/null' TERM INT
    tries=0
    until shoal status >/dev/null 2>&1; do
      tries=$((tries + 1))
      if [ "$tries" -gt 150 ] || ! kill -0 "$daemon" 2>/dev/null; then echo "shoal-entrypoint: the daemon did not start" >&2; exit 1; fi
      sleep 0.2
    done
    id="$(shoal id --json | field peerId)"
    key="$(shoal keys export --json | field publicKey)"
    host="${SHOAL_PUBLIC_HOST:-$(hostname)}"
    printf '{"peerId":"%s","address":"/dns4/%s/tcp/%s/p2p/%s","key":"%s"}\n' "$id" "$host" "$port" "$id" "$key" > "$info.tmp"
    mv "$info.tmp" "$info"
    echo "shoal-entrypoint: publisher $id, key $key" >&2
    # `wait` returns early when the trap fires; then wait again for the daemon's own exit status.
    status=0
    wait "$daemon" || status=$?
    if kill -0 "$daemon" 2>/dev/null; then status=0; wait "$daemon" || status=$?; fi
    exit "$status"
    ;;
  node)
    tries=0
    until [ -s "$info" ]; do
      tries=$((tries + 1))
      if [ "$tries" -gt 300 ]; then echo "shoal-entrypoint: $info did not appear; is the publisher up?" >&2; exit 1; fi
      sleep 0.2
    done
    # Merged into an existing config.json: peers, trust for this key and follow are replaced.
    SHOAL_PUBLISHER_ADDRESS="$(field address < "$info")" \
    SHOAL_PUBLISHER_KEY="$(field key < "$info")" \
    node -e '
      const fs = require("node:fs")
      const e = process.env
      const path = require("node:path").join(e.SHOAL_HOME, "config.json")
      const old = fs.existsSync(path) ? JSON.parse(fs.readFileSync(path, "utf8")) : {}
      const follow = (e.SHOAL_FOLLOW ?? "").split(",").filter(Boolean)
      const config = {
        ...old,
        p2p: { ...old.p2p, peers: [e.SHOAL_PUBLISHER_ADDRESS], mdns: false },
        trust: [...(old.trust ?? []).filter(r => r.key !== e.SHOAL_PUBLISHER_KEY), { key: e.SHOAL_PUBLISHER_KEY, models: e.SHOAL_TRUST_MODELS || "*" }],
        ...(follow.length > 0 ? { follow } : {})
      }
      fs.writeFileSync(path + ".tmp", JSON.stringify(config, null, 2) + "\n")
      fs.renameSync(path + ".tmp", path)
    '
    exec shoal daemon --listen "$listen" "$@"
    ;;
  *)
    exec shoal "$role" "$@"
    ;;
esac
