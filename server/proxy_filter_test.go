package server

import (
	"net/http"
	"testing"
)

// TestDroppedHeadersCanonical: the proxy deletes these names from header
// maps directly, which only works for canonical keys.
func TestDroppedHeadersCanonical(t *testing.T) {
	for _, list := range [][]string{droppedHeaders, droppedResponseHeaders} {
		for _, name := range list {
			if c := http.CanonicalHeaderKey(name); c != name {
				t.Errorf("%q is not canonical (%q)", name, c)
			}
		}
	}
}
