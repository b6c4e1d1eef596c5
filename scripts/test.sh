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

echo "== go vet"
go vet ./...

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go test -race"
if [ $# -gt 0 ]; then
	go test -race -count=1 "$@"
else
	go test -race -count=1 -timeout 30m ./...
fi
