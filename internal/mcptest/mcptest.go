package mcptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// Scopes of the server.
const (
	ReadScope  = "tools:read"
	AdminScope = "tools:admin"
)

// Options configure a [Server].
type Options struct {
	// AuthorizationServer overrides the issuer the resource metadata
	// names; default the authztest server's issuer.
	AuthorizationServer string
}

// Server is a running MCP server. Start it with [Server.Start] once its
// authorization server exists (that server needs [Server.URL] as its
// resource).
type Server struct {
	// URL is the MCP endpoint, http://127.0.0.1:port/mcp.
	URL string
	// Base is the server's origin.
	Base string

	ts      *httptest.Server
	authz   *authztest.Server
	opts    Options
	release chan struct{}

	mu   sync.Mutex
	seen []Seen
}

// Seen is one request that reached the MCP server with a valid token.
type Seen struct {
	Method          string // JSON-RPC method, "" for GET/DELETE
	SessionID       string // Mcp-Session-Id
	ProtocolVersion string // Mcp-Protocol-Version
	LastEventID     string // Last-Event-ID
	Token           string
}

// New makes a server whose listener is open (so URL is known) but which
// does not serve until Start.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	mux := http.NewServeMux()
	ts := httptest.NewUnstartedServer(mux)
	s := &Server{ts: ts, opts: opts, release: make(chan struct{}, 16)}
	s.Base = "http://" + ts.Listener.Addr().String()
	s.URL = s.Base + "/mcp"
	t.Cleanup(ts.Close)

	srv := mcp.NewServer(&mcp.Implementation{Name: "mcptest", Version: "1.0.0"}, nil)
	type text struct {
		Text string `json:"text"`
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "returns its text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in text) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "stream", Description: "notifies progress, then waits for the test"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			if tok := req.Params.GetProgressToken(); tok != nil {
				if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: tok, Progress: 1, Total: 2, Message: "first event"}); err != nil {
					return nil, nil, err
				}
			}
			select {
			case <-s.release:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "second event"}}}, nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "admin", Description: "needs " + AdminScope},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "admin ok"}}}, nil, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)

	mux.Handle("/mcp", s.requireToken(handler))
	mux.HandleFunc("/.well-known/oauth-protected-resource/mcp", func(w http.ResponseWriter, r *http.Request) {
		as := s.opts.AuthorizationServer
		if as == "" && s.authz != nil {
			as = s.authz.Issuer
		}
		auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
			Resource:             s.URL,
			AuthorizationServers: []string{as},
			ScopesSupported:      []string{ReadScope},
		}).ServeHTTP(w, r)
	})
	return s
}

// Start serves, checking tokens at authz.
func (s *Server) Start(authz *authztest.Server) {
	s.authz = authz
	s.ts.Start()
}

// Release lets one waiting "stream" call answer.
func (s *Server) Release() { s.release <- struct{}{} }

// Seen returns the requests that reached the MCP server with a valid token.
func (s *Server) Seen() []Seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

func (s *Server) metadataURL() string { return s.Base + "/.well-known/oauth-protected-resource/mcp" }

// requireToken is the resource server's side of RFC 6750 and RFC 8707.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		challenge := func(status int, params string) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer resource_metadata=%q%s`, s.metadataURL(), params))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":%q}`, http.StatusText(status))
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			challenge(http.StatusUnauthorized, fmt.Sprintf(`, scope=%q`, ReadScope))
			return
		}
		ti, err := s.authz.Introspect(r.Context(), token)
		if err != nil {
			http.Error(w, "introspection failed", http.StatusServiceUnavailable)
			return
		}
		if !ti.Active || !slices.Contains(ti.Audience, s.URL) {
			challenge(http.StatusUnauthorized, `, error="invalid_token"`)
			return
		}
		var body []byte
		if r.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		var msg struct {
			Method string `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		_ = json.Unmarshal(body, &msg)
		if msg.Method == "tools/call" && msg.Params.Name == "admin" && !slices.Contains(ti.Scopes, AdminScope) {
			challenge(http.StatusForbidden, fmt.Sprintf(`, error="insufficient_scope", scope=%q`, strings.Join(append(slices.Clone(ti.Scopes), AdminScope), " ")))
			return
		}
		s.mu.Lock()
		s.seen = append(s.seen, Seen{Method: msg.Method, SessionID: r.Header.Get("Mcp-Session-Id"),
			ProtocolVersion: r.Header.Get("Mcp-Protocol-Version"), LastEventID: r.Header.Get("Last-Event-ID"), Token: token})
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}
