package mcpauth_test

import (
	"context"
	"fmt"
	"os"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
)

// Discover an MCP server's authorization server, register a client there,
// and keep a token bound to the server: every token request the endpoint
// makes carries the server's resource indicator.
func Example() {
	ctx := context.Background()
	opts := mcpauth.Options{} // public hosts only, https only
	d, err := mcpauth.Discover(ctx, opts, "https://mcp.example/mcp")
	if err != nil {
		fmt.Println(err)
		return
	}
	reg, err := mcpauth.Register(ctx, opts, d.Metadata, mcpauth.ClientMetadata{
		RedirectURIs: []string{"https://app.example/callback"},
		ClientName:   "my agent",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := d.EndpointConfig(reg)
	cfg.HTTPClient = mcpauth.NewHTTPClient(opts.Policy, 0, nil)
	ep, err := oauth.NewEndpoint(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	// ... run the authorization code flow with ep.AuthCodeURL (add
	// resource=d.Resource to its extra parameters) and ep.Exchange. Every
	// refresh carries the resource; a client.TokenSource built on ep
	// (Refresher: ep) keeps the token fresh the same way.
	tok, err := ep.Refresh(ctx, os.Getenv("MCP_REFRESH_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = tok
}
