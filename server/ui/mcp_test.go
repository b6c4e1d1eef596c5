package ui_test

import (
	"net/http"
	"testing"

	"github.com/tokenbroker/tokenbroker/store"
)

// An MCP connection's detail page shows its server, issuer and the scopes
// a step-up asked for, with what to do about them.
func TestDetailMCP(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("m1", "acme")
	if _, err := h.store.UpdateConnection(t.Context(), "m1", func(c store.Connection) (store.Connection, []store.Event, error) {
		c.MCP = &store.MCP{ServerURL: "https://mcp.example/mcp", Resource: "https://mcp.example/mcp",
			Issuer: "https://as.example", NeededScopes: []string{"tools:admin"}}
		return c, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	b := h.browser()
	b.signIn(h.adminKey)
	p := b.get("/ui/connections/m1")
	if p.status != http.StatusOK {
		t.Fatalf("detail: status %d", p.status)
	}
	mustContain(t, "an MCP connection's detail page", p.body,
		"MCP server", "https://mcp.example/mcp", "Issuer", "https://as.example",
		"Needed scopes", "tools:admin", "create a new connect session")
}
