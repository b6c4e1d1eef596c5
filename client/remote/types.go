package remote

import (
	"encoding/json"
	"time"
)

// Status is a connection's state.
type Status string

// Connection states.
const (
	StatusActive      Status = "active"
	StatusNeedsReauth Status = "needs_reauth"
	StatusRevoked     Status = "revoked"
)

// ImportRequest is the body of [Client.CreateConnection] and
// [Client.PutConnection]. ID and Provider are required; tokens come from
// wherever the caller obtained them (never hard-coded).
type ImportRequest struct {
	ID                    string          `json:"id"`
	Provider              string          `json:"provider"`
	Grant                 string          `json:"grant,omitempty"`
	Scopes                []string        `json:"scopes,omitempty"`
	AccessToken           string          `json:"access_token,omitempty"`
	RefreshToken          string          `json:"refresh_token,omitempty"`
	ExpiresIn             float64         `json:"expires_in,omitempty"`
	ExpiresAt             *time.Time      `json:"expires_at,omitempty"`
	IssuedAt              *time.Time      `json:"issued_at,omitempty"`
	RefreshTokenExpiresAt *time.Time      `json:"refresh_token_expires_at,omitempty"`
	TokenType             string          `json:"token_type,omitempty"`
	Scope                 string          `json:"scope,omitempty"`
	Metadata              json.RawMessage `json:"metadata,omitempty"`
}

// String keeps the tokens out of logs and %v.
func (r ImportRequest) String() string {
	return "remote.ImportRequest{id=" + r.ID + " provider=" + r.Provider + "}"
}

// GoString keeps %#v from printing the tokens.
func (r ImportRequest) GoString() string { return r.String() }

// Failure is why a connection's last refresh failed.
type Failure struct {
	Code          string     `json:"code"`
	Message       string     `json:"message"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
}

// Connection is a connection as the API shows it: never its tokens.
type Connection struct {
	ID                    string          `json:"id"`
	Provider              string          `json:"provider"`
	Status                Status          `json:"status"`
	Grant                 string          `json:"grant"`
	TokenType             string          `json:"token_type"`
	Scope                 string          `json:"scope"`
	ExpiresAt             *time.Time      `json:"expires_at"`
	ExpirySource          string          `json:"expiry_source"`
	HasRefreshToken       bool            `json:"has_refresh_token"`
	RefreshTokenExpiresAt *time.Time      `json:"refresh_token_expires_at"`
	RefreshChainExpiresAt *time.Time      `json:"refresh_chain_expires_at"`
	RefreshExpiringSoon   bool            `json:"refresh_token_expiring_soon"`
	LastRefreshAt         *time.Time      `json:"last_refresh_at"`
	NextRefreshAt         *time.Time      `json:"next_refresh_at"`
	Failure               *Failure        `json:"failure"`
	Metadata              json.RawMessage `json:"metadata"`
	Version               int64           `json:"version"`
	CreatedAt             *time.Time      `json:"created_at"`
	UpdatedAt             *time.Time      `json:"updated_at"`
	// MCPServerURL, Issuer and NeededScopes describe a connection to an
	// MCP server; absent for other connections.
	MCPServerURL string   `json:"mcp_server_url,omitempty"`
	Issuer       string   `json:"issuer,omitempty"`
	NeededScopes []string `json:"needed_scopes,omitempty"`
}

// ConnectionList is one page of [Client.ListConnections].
type ConnectionList struct {
	Connections []Connection `json:"connections"`
	// NextAfter is the ListOptions.After of the next page; empty on the
	// last page.
	NextAfter string `json:"next_after"`
}

// ListOptions filter and page [Client.ListConnections]. Zero fields are
// left out.
type ListOptions struct {
	Provider string
	Status   Status
	Limit    int
	After    string
}

// Token is a connection's access token as the API hands it out.
type Token struct {
	AccessToken string     `json:"access_token"`
	TokenType   string     `json:"token_type"`
	ExpiresAt   *time.Time `json:"expires_at"`
	ExpiresIn   *int64     `json:"expires_in"`
}

// String keeps the token out of logs and %v.
func (t Token) String() string { return "remote.Token{type=" + t.TokenType + " access=<redacted>}" }

// GoString keeps %#v from printing the token.
func (t Token) GoString() string { return t.String() }

// DeleteResult is the answer of [Client.DeleteConnection].
type DeleteResult struct {
	Deleted         bool   `json:"deleted"`
	Revoked         bool   `json:"revoked"`
	RevocationError string `json:"revocation_error,omitempty"`
}

// ConnectSessionRequest is the body of [Client.CreateConnectSession].
type ConnectSessionRequest struct {
	ConnectionID string `json:"connection_id"`
	// Provider, or MCPServerURL to connect an MCP server by its URL.
	Provider     string   `json:"provider,omitempty"`
	MCPServerURL string   `json:"mcp_server_url,omitempty"`
	RedirectURL  string   `json:"redirect_url,omitempty"`
	Scopes       []string `json:"scopes,omitempty"`
}

// ConnectSession is a link that runs the OAuth flow for an end user.
type ConnectSession struct {
	ID           string    `json:"id"`
	URL          string    `json:"url"`
	ExpiresAt    time.Time `json:"expires_at"`
	ConnectionID string    `json:"connection_id"`
	Provider     string    `json:"provider"`
	MCPServerURL string    `json:"mcp_server_url,omitempty"`
	Scopes       []string  `json:"scopes,omitempty"`
}
