#!/usr/bin/env python3
"""A small client of shoal's local RPC for Python serving stacks, standard library only.

The RPC is HTTP/1.1 + JSON on the daemon's unix socket (docs/openapi.json describes every route).
This module finds the socket as the CLI does (SHOAL_HOST=unix:///path, else the home's
config.json rpc.socket, else $SHOAL_HOME/shoal.sock), resolves a label to a verified local folder,
leases it, and follows label moves from the cursor resolve returned, so no move is missed.

    python3 shoal_client.py resolve llama-8b@prod      # prints {"version": ..., "path": ...}
    python3 shoal_client.py watch llama-8b             # prints label.moved / version.staged events

In a server:

    shoal = ShoalClient()
    v = shoal.resolve("llama-8b@prod", ensure=True)     # pulls first if needed
    lease = shoal.lease(f"{v['model']}@{v['version']}", "inference-1")
    load(v["path"])
    for event, data in shoal.watch("llama-8b", since=v["cursor"]):
        if event == "label.moved": ...                   # load data["version"], switch, release the old lease
        if event == "gone": ...                          # missed events: resolve again
"""
import http.client
import json
import os
import socket
import sys
import urllib.parse

MAX_CONFIG_BYTES = 8 * 1024 * 1024


class ShoalError(Exception):
    """A failure the daemon answered: code (NOT_FOUND, CONFLICT, ...) and message."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("shoal", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def default_socket(env=os.environ):
    """The daemon's socket, by the CLI's rules (rpc/target.ts)."""
    host = env.get("SHOAL_HOST", "")
    if host.startswith("unix://") and len(host) > len("unix://"):
        return host[len("unix://"):]
    if host:
        raise ValueError("this example speaks to the unix socket only: set SHOAL_HOST=unix:///path/to/shoal.sock or unset it")
    home = env.get("SHOAL_HOME") or os.path.join(env.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "shoal")
    sock = "shoal.sock"
    config = os.path.join(home, "config.json")
    if os.path.isfile(config) and os.path.getsize(config) <= MAX_CONFIG_BYTES:
        with open(config, encoding="utf-8") as f:
            configured = (json.load(f).get("rpc") or {}).get("socket")
        if isinstance(configured, str) and configured:
            sock = configured
    return os.path.join(home, sock)


class ShoalClient:
    def __init__(self, socket_path=None, timeout=30):
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout

    def _request(self, method, path, body=None, timeout=None):
        conn = _UnixConnection(self.socket_path, timeout=timeout if timeout is not None else self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if payload is None else {"content-type": "application/json"}
        conn.request(method, path, body=payload, headers=headers)
        return conn, conn.getresponse()

    def call(self, method, path, body=None):
        conn, res = self._request(method, path, body)
        try:
            value = json.loads(res.read() or b"{}")
        finally:
            conn.close()
        if res.status >= 400:
            raise ShoalError(value.get("code", "INTERNAL"), value.get("message", f"status {res.status}"))
        return value

    def resolve(self, ref, ensure=False):
        """The complete local version of ref: {model, version, path, files, labels, cursor}."""
        if not ensure:
            return self.call("GET", "/v1/resolve?" + urllib.parse.urlencode({"ref": ref}))
        conn, res = self._request("POST", "/v1/resolve", {"ref": ref, "ensure": True}, timeout=None)
        try:
            if res.status >= 400:
                value = json.loads(res.read() or b"{}")
                raise ShoalError(value.get("code", "INTERNAL"), value.get("message", ""))
            for line in res:
                event = json.loads(line)
                if event["type"] == "result":
                    return event["result"]
                if event["type"] == "error":
                    raise ShoalError(event["code"], event["message"])
        finally:
            conn.close()
        raise ShoalError("INTERNAL", "the daemon closed the stream without a result")

    def lease(self, ref, holder, ttl_seconds=60):
        """Keeps ref's version through GC until released or expired (renew it every ttl/3)."""
        return self.call("POST", "/v1/leases", {"ref": ref, "holder": holder, "ttlSeconds": ttl_seconds})

    def renew(self, lease_id, ttl_seconds=60):
        return self.call("POST", "/v1/leases/renew", {"id": lease_id, "ttlSeconds": ttl_seconds})

    def release(self, lease_id):
        return self.call("DELETE", "/v1/leases", {"id": lease_id})

    def watch(self, model=None, since=None, types=("label.moved", "version.staged")):
        """Yields (event, data) from the server-sent events of /v1/watch, after since first."""
        query = {"types": ",".join(types)}
        if model is not None:
            query["model"] = model
        if since is not None:
            query["since"] = since
        conn, res = self._request("GET", "/v1/watch?" + urllib.parse.urlencode(query), timeout=None)
        try:
            if res.status >= 400:
                value = json.loads(res.read() or b"{}")
                raise ShoalError(value.get("code", "INTERNAL"), value.get("message", ""))
            event, data = "message", []
            for raw in res:
                line = raw.decode().rstrip("\n")
                if line == "":
                    if data and event != "ready":
                        yield event, json.loads("\n".join(data))
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        finally:
            conn.close()


def main(argv):
    if len(argv) < 2 or argv[0] not in ("resolve", "watch"):
        print("usage: shoal_client.py resolve <name@label> | watch <model>", file=sys.stderr)
        return 2
    shoal = ShoalClient()
    try:
        if argv[0] == "resolve":
            v = shoal.resolve(argv[1])
            print(json.dumps({"version": v["version"], "path": v["path"], "cursor": v["cursor"]}))
        else:
            for event, data in shoal.watch(argv[1]):
                print(json.dumps({"event": event, **data}), flush=True)
    except ShoalError as err:
        print(f"shoal: {err.message}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"shoal: no daemon is listening on {shoal.socket_path}; start one with shoal daemon", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
