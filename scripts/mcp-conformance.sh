#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance)
# with tokenbroker as the MCP client under test: its client authorization
# scenarios (the "auth" suite, and the draft resource-mismatch and
# offline_access ones). The adapter is internal/mcpconformance. Called by
# scripts/test.sh; in CI (CI=true) anything that keeps it from running is a
# failure. See docs/mcp.md.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.1.16 # the suite's version; scripts/mcp-conformance-baseline.yml is for it

fail() { echo "mcp-conformance: $*" >&2; exit 1; }

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
need=()
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}"
	{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"; } ||
		fail "could not install ${need[*]}"
fi

work=$(mktemp -d /tmp/tbconf-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "== installing @modelcontextprotocol/conformance@$VERSION"
(cd "$work" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error "@modelcontextprotocol/conformance@$VERSION" >/dev/null) ||
	fail "npm install @modelcontextprotocol/conformance@$VERSION failed"
entry="$work/node_modules/@modelcontextprotocol/conformance/dist/index.js"

# The suite wants node >= 22 for fs.globSync, which only its report reader
# uses; on older node that import is replaced by a function that says so.
if ! node -e 'process.exit(require("fs").globSync ? 0 : 1)'; then
	sed -i 's/existsSync as a,globSync as o,mkdtempSync/existsSync as a,mkdtempSync/' "$entry"
	if grep -q 'globSync as' "$entry"; then fail "cannot shim fs.globSync in this version of the suite; use node >= 22"; fi
	sed -i '2s/^/const o=()=>{throw Error("fs.globSync needs node >= 22")};\n/' "$entry"
fi

go build -o "$work/tbclient" ./internal/mcpconformance

# The suite's servers bind every interface: run them, and tokenbroker, in a
# private network namespace that has only loopback.
run() {
	unshare -rn sh -c 'ip link set lo up && exec node "$@"' sh "$entry" client --command "$work/tbclient" "$@"
}
echo "== MCP conformance: auth suite"
run --suite auth --expected-failures scripts/mcp-conformance-baseline.yml
for s in auth/resource-mismatch auth/offline-access-scope auth/offline-access-not-supported; do
	echo "== MCP conformance: $s"
	run --scenario "$s"
done
