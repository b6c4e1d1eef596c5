package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ProviderMCP is the [Connection.Provider] of every connection to an MCP
// server: such a connection has no configured provider; its
// [Connection.MCP] says which server and authorization server it uses.
const ProviderMCP = "mcp"

// MCP is what a connection to an MCP server remembers about it (see
// docs/mcp.md).
type MCP struct {
	// ServerURL is the MCP endpoint the connection was made for; the proxy
	// sends calls there.
	ServerURL string `json:"server_url"`
	// Resource is the RFC 8707 resource indicator sent on the
	// authorization request, the code exchange and every refresh.
	Resource string `json:"resource"`
	// Issuer is the authorization server whose registration
	// ([MCPRegistration]) refreshes the connection.
	Issuer string `json:"issuer"`
	// NeededScopes are scopes the server asked for (a 403 with
	// insufficient_scope) that the grant lacks; the next connect session
	// asks for them. Empty once a grant covers them.
	NeededScopes []string `json:"needed_scopes,omitempty"`
}

// Validate checks what every backend requires of an MCP binding.
func (m *MCP) Validate() error {
	if m.ServerURL == "" || m.Resource == "" || m.Issuer == "" {
		return errors.New("mcp binding needs server_url, resource and issuer")
	}
	for _, s := range m.NeededScopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("mcp needed scope %q is empty or contains white space", s)
		}
	}
	return nil
}

// EncodeMCP is the JSON a backend stores for m; nil for no binding.
func EncodeMCP(id string, m *MCP) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("connection %q: %w", id, err)
	}
	return json.Marshal(m)
}

// DecodeMCP reads what EncodeMCP wrote; nil or empty means no binding.
func DecodeMCP(id string, b []byte) (*MCP, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var m MCP
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("stored mcp binding of %q is not valid JSON: %w", id, err)
	}
	return &m, nil
}

// MCPRegistration is tokenbroker's client at one authorization server of
// MCP servers, shared by every connection that uses that issuer.
type MCPRegistration struct {
	// Issuer identifies the authorization server (RFC 8414 issuer).
	Issuer string
	// ClientID is the registered client id (or the Client ID Metadata
	// Document URL, or a configured client's id).
	ClientID string
	// ClientSecret is sealed by the caller like tokens; nil for a public
	// client.
	ClientSecret []byte
	// TokenEndpointAuthMethod is the registered RFC 7591 method.
	TokenEndpointAuthMethod string
	// Method is how the client came to be: "dynamic" (RFC 7591),
	// "metadata_document" or "configured".
	Method string
	// RedirectURI is the callback registered with the client.
	RedirectURI string
	// Metadata is the authorization server's metadata (JSON) as fetched
	// when registering, so refreshes need no discovery.
	Metadata  json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Validate checks what every backend requires of a registration.
func (r MCPRegistration) Validate() error {
	switch {
	case r.Issuer == "" || r.ClientID == "":
		return errors.New("mcp registration needs an issuer and a client id")
	case len(r.Metadata) == 0 || !json.Valid(r.Metadata):
		return fmt.Errorf("mcp registration of %q: metadata is not valid JSON", r.Issuer)
	}
	return nil
}

// MCPRegistrations keeps one client registration per authorization
// server, where every replica sees it. Both backends implement it.
type MCPRegistrations interface {
	// PutMCPRegistration stores r as the registration of r.Issuer,
	// replacing any earlier one. CreatedAt and UpdatedAt are set by the
	// store.
	PutMCPRegistration(ctx context.Context, r MCPRegistration) (MCPRegistration, error)
	// GetMCPRegistration returns ErrNotFound when the issuer has none.
	GetMCPRegistration(ctx context.Context, issuer string) (MCPRegistration, error)
	// DeleteMCPRegistration deletes the issuer's registration if its
	// client id is still clientID (a server forgot that client; a newer
	// registration is kept). Returns ErrNotFound otherwise.
	DeleteMCPRegistration(ctx context.Context, issuer, clientID string) error
	// ListMCPRegistrations returns every registration, ordered by issuer.
	ListMCPRegistrations(ctx context.Context) ([]MCPRegistration, error)
	// ResealMCPRegistration replaces the sealed client secret of the
	// issuer's registration if its client id is still clientID (key
	// rotation re-encrypts it; a registration replaced meanwhile is left
	// alone). Returns ErrNotFound otherwise.
	ResealMCPRegistration(ctx context.Context, issuer, clientID string, secret []byte) error
}
