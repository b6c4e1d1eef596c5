package config

import (
	"strings"
	"testing"
)

func TestMCPConfig(t *testing.T) {
	t.Setenv("MCP_AS_SECRET", "s3cret")
	c, err := Load(writeConfig(t, `
mcp:
  allow_private_addresses: true
  clients:
    - issuer: https://as.example
      client_id: tb
      client_secret_env: MCP_AS_SECRET
      token_endpoint_auth_method: client_secret_post
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.MCP.AllowPrivateAddresses || len(c.MCP.Clients) != 1 || c.MCP.Clients[0].ClientID != "tb" {
		t.Fatalf("mcp config %+v", c.MCP)
	}
	if s, err := c.MCP.Clients[0].Secret(func(k string) (string, bool) { return "s3cret", k == "MCP_AS_SECRET" }); err != nil || s != "s3cret" {
		t.Errorf("secret: %v", err)
	}
	if c2, _ := Load(writeConfig(t, "listen: 127.0.0.1:8080\n")); c2.MCP.AllowPrivateAddresses {
		t.Error("private addresses allowed by default")
	}

	for _, tc := range []struct{ yaml, want string }{
		{"mcp:\n  clients:\n    - issuer: https://as.example\n      client_id: tb\n      client_secret: inline\n", "client_secret_env or client_secret_file"},
		{"mcp:\n  clients:\n    - issuer: not-a-url\n      client_id: tb\n", "mcp.clients[0].issuer"},
		{"mcp:\n  clients:\n    - issuer: https://as.example\n", "mcp.clients[0].client_id"},
		{"mcp:\n  clients:\n    - issuer: https://as.example\n      client_id: tb\n      client_secret_env: MCP_UNSET_SECRET\n", "MCP_UNSET_SECRET"},
		{"mcp:\n  allow_private: true\n", "mcp.allow_private"},
	} {
		err := loadAndValidate(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want one naming %q", tc.yaml, err, tc.want)
		}
	}
}
