module github.com/tokenbroker/tokenbroker/client

// The oldest Go release still supported upstream (1.26; 1.27 is current),
// which golang.org/x/oauth2 v0.37.0 also requires.
go 1.26.0

require (
	github.com/tokenbroker/tokenbroker/oauth v0.0.0-00010101000000-000000000000
	golang.org/x/oauth2 v0.37.0
)

require golang.org/x/sync v0.24.0 // indirect

// Inside this repository the oauth module is the one next door; go.work
// does the same for commands run from the repository root. A release
// replaces the placeholder version above by the oauth module's tag
// (docs/library.md, "Releasing the library").
replace github.com/tokenbroker/tokenbroker/oauth => ../oauth
