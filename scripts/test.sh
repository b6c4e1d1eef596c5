#!/usr/bin/env bash
# The project's one test command: ./scripts/test.sh
#
# On a fresh machine it installs what the tests need, then runs vet and the
# whole test suite under the race detector. Extra arguments go to `go test`
# (for example: ./scripts/test.sh -run TestTransport ./client).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi

# --- library modules (issue 14) ---
# client and oauth are modules of their own, so that programs using the
# library do not resolve the server's dependencies (docs/library.md,
# "Modules"). go.work puts them in one workspace with the server; every
# command below covers all three.
modules="./... ./client/... ./oauth/..."
# --- end library modules ---

echo "== go vet"
go vet $modules

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

# Headless Chromium for the dashboard's browser test (server/ui). Without
# it that test skips, except in CI (CI set), where it fails.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
	echo "== installing chromium"
	sudo=""
	if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
	# Without recommended packages (no avahi, cups, samba or a terminal
	# emulator) and quietly: dpkg's output goes to a log, shown on failure.
	aptlog=$(mktemp /tmp/apt-chromium-XXXXXX.log)
	if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium; } >"$aptlog" 2>&1; then
		tail -n 30 "$aptlog"
		echo "chromium could not be installed; the browser test will skip (fail in CI)"
	fi
	rm -f "$aptlog"
fi

# A throwaway PostgreSQL for the PostgreSQL tests, unless one was given. In
# CI (CI=true) those tests fail rather than skip when it is missing.
if [ -z "${TOKENBROKER_TEST_POSTGRES:-}" ]; then
	echo "== starting a throwaway PostgreSQL"
	pgdir=$(mktemp -d /tmp/tbpg-XXXXXX)
	trap 'scripts/pg.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
	TOKENBROKER_TEST_POSTGRES=$(scripts/pg.sh start "$pgdir" --until-pid $$)
	export TOKENBROKER_TEST_POSTGRES
fi

# The official MCP conformance suite, tokenbroker as the client under test
# (docs/mcp.md). Part of the full run only; it runs before the Go tests so
# that the run ends with go test's own summary.
if [ $# -eq 0 ]; then
	echo "== MCP conformance suite"
	scripts/mcp-conformance.sh
fi

echo "== go test -race"
if [ $# -gt 0 ]; then
	go test -race -count=1 "$@"
else
	go test -race -count=1 -timeout 30m $modules
fi
