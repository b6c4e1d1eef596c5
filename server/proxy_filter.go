package server

import (
	"net/http"
	"strings"
)

// droppedResponseHeaders (canonical names) are provider response headers that must not reach
// the caller (docs/security.md, "Proxy responses"): cookies would be set
// for the broker's origin, CORS headers would open the broker's origin to
// other sites, and the rest describe the provider's own origin and
// transport, not ours. A provider's allow_response_headers lets one
// through where a caller needs it.
var droppedResponseHeaders = []string{
	"Set-Cookie",
	"Set-Cookie2",
	"Strict-Transport-Security",
	"Alt-Svc",
	"Clear-Site-Data",
	"Public-Key-Pins",
	"Public-Key-Pins-Report-Only",
	"Content-Security-Policy",
	"Content-Security-Policy-Report-Only",
	"Report-To",
	"Nel",
	"Origin-Agent-Cluster",
	"Cross-Origin-Opener-Policy",
	"Cross-Origin-Embedder-Policy",
	"Cross-Origin-Resource-Policy",
	"Timing-Allow-Origin",
}

// corsPrefix starts every CORS response header (Fetch standard §3.2.3).
const corsPrefix = "Access-Control-"

// filterResponseHeaders removes from h what must not cross to the caller,
// except the headers in allow (canonical names).
func filterResponseHeaders(h http.Header, allow map[string]bool) {
	for name := range h {
		if allow[name] {
			continue
		}
		if strings.HasPrefix(name, corsPrefix) {
			delete(h, name)
		}
	}
	for _, name := range droppedResponseHeaders {
		if !allow[name] {
			delete(h, name) // canonical already: Del would canonicalise again
		}
	}
}

func allowSet(names []string) map[string]bool {
	if len(names) == 0 {
		return nil
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[http.CanonicalHeaderKey(strings.TrimSpace(n))] = true
	}
	return m
}
