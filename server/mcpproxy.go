package server

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// MCPBroker is what the proxy needs for connections to MCP servers.
// [*broker.Broker] satisfies it.
type MCPBroker interface {
	// MCPConnection returns the connection's MCP binding, nil for other
	// connections.
	MCPConnection(ctx context.Context, id string) (*store.MCP, error)
	// RecordScopeNeeded records a step-up the server asked for.
	RecordScopeNeeded(ctx context.Context, id string, scopes []string) (store.Connection, error)
	// MCPCanRevoke tells the delete route whether deleting revoked.
	MCPCanRevoke(ctx context.Context, binding *store.MCP) bool
}

var _ MCPBroker = (*broker.Broker)(nil)

// proxyMCP sends a call to the MCP server of connection id: to the server
// URL itself for /v1/proxy/{id}/, or to a path under it. The token is
// refreshed and the call replayed once when the server says the token is
// invalid (401 invalid_token); a 403 insufficient_scope goes back to the
// caller untouched and is recorded as a step-up. Server-sent event streams
// are flushed to the caller as each event arrives; Mcp-Session-Id,
// Mcp-Protocol-Version and Last-Event-ID pass through both ways. See
// docs/mcp.md.
func (s *Server) proxyMCP(w http.ResponseWriter, r *http.Request, id string, first broker.Token) {
	mb, ok := s.broker.(MCPBroker)
	if !ok {
		s.writeError(w, r, invalid("MCP connections are not supported by this server"))
		return
	}
	binding, err := mb.MCPConnection(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if binding == nil {
		s.writeError(w, r, invalid("connection "+id+" has no MCP server"))
		return
	}
	base, err := url.Parse(binding.ServerURL)
	if err != nil {
		s.writeError(w, r, invalid("the connection's MCP server URL cannot be parsed"))
		return
	}
	upstream, err := mcpUpstreamURL(base, r.URL)
	if err != nil {
		s.writeError(w, r, invalid(err.Error()))
		return
	}
	if err := s.bufferBody(r); err != nil {
		s.writeError(w, r, invalid("could not read the request body"))
		return
	}
	s.beginProxyCall(r, upstream, id, first, client.Transport{
		Base: s.mcpTransport,
		// A 401 is stale (MCP servers answer an expired token with
		// invalid_token, or with no error at all), as is any answer
		// whose challenge says invalid_token; a step-up
		// (insufficient_scope) is never refreshed and goes back to
		// the caller as it came (client.Transport's challenge rules).
		RefreshOn:             []int{http.StatusUnauthorized},
		PassInsufficientScope: true,
	})
	s.mcpProxy.ServeHTTP(w, r)
}

// newMCPProxy builds the ReverseProxy of every call to an MCP server.
// ReverseProxy flushes text/event-stream answers after every write; -1
// does so for streamed answers of other types too. A 403 whose challenge
// asks for more scopes is recorded as a step-up for the connection.
func (s *Server) newMCPProxy() *httputil.ReverseProxy {
	return s.newReverseProxy(-1, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusForbidden {
			return nil
		}
		mb, ok := s.broker.(MCPBroker)
		if !ok {
			return nil
		}
		c, ok := mcpauth.BearerChallenge(resp.Header)
		if !ok || c.Params["error"] != "insufficient_scope" || len(c.Scopes()) == 0 {
			return nil
		}
		call, err := callOf(resp.Request)
		if err != nil {
			return err
		}
		ctx, id := resp.Request.Context(), call.source.id
		if _, err := mb.RecordScopeNeeded(context.WithoutCancel(ctx), id, c.Scopes()); err != nil {
			s.log.WarnContext(ctx, "could not record the scopes an MCP server asked for",
				"connection", id, "error", err)
		}
		return nil
	})
}

// mcpUpstreamURL maps /v1/proxy/{id}/ to the server URL itself and
// /v1/proxy/{id}/{path} to path under it.
func mcpUpstreamURL(base *url.URL, in *url.URL) (*url.URL, error) {
	u, err := upstreamURL(base, in)
	if err != nil {
		return nil, err
	}
	if u.Path == base.Path+"/" && base.Path != "" && base.Path[len(base.Path)-1] != '/' {
		u.Path, u.RawPath = base.Path, base.RawPath
	}
	return u, nil
}

// ClientMetadataPath is where tokenbroker serves its OAuth Client ID
// Metadata Document: authorization servers of MCP servers that support
// such documents take public_url + ClientMetadataPath as the client_id and
// fetch this to learn the client's name and redirect URI.
const ClientMetadataPath = "/v1/mcp/client-metadata.json"

func (s *Server) clientMetadata(w http.ResponseWriter, r *http.Request) {
	if s.publicURL == "" {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "public_url is not configured"})
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{
		"client_id":                  s.publicURL + ClientMetadataPath,
		"client_name":                "tokenbroker",
		"redirect_uris":              []string{s.publicURL + callbackPath},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	})
}
