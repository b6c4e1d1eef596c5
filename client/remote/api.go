package remote

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// op is one operation of the API: its OpenAPI operationId, method and path
// template. Every method of [Client] calls through one, and a test checks
// the table against /v1/openapi.json in both directions.
type op struct {
	name   string
	method string
	path   string
	// safe: the request may be sent again after a failure without doing
	// twice what it does once (RFC 9110 §9.2.2, and the stale-token report,
	// whose second copy finds the token already replaced).
	safe bool
}

var (
	opCreateConnection  = op{"createConnection", http.MethodPost, "/v1/connections", false}
	opCreateBatch       = op{"createConnectionsBatch", http.MethodPost, "/v1/connections:batch", false}
	opListConnections   = op{"listConnections", http.MethodGet, "/v1/connections", true}
	opGetConnection     = op{"getConnection", http.MethodGet, "/v1/connections/{id}", true}
	opPutConnection     = op{"reimportConnection", http.MethodPut, "/v1/connections/{id}", true}
	opDeleteConnection  = op{"deleteConnection", http.MethodDelete, "/v1/connections/{id}", true}
	opGetToken          = op{"getToken", http.MethodGet, "/v1/connections/{id}/token", true}
	opReportStale       = op{"reportStaleToken", http.MethodPost, "/v1/connections/{id}/token", true}
	opRefreshConnection = op{"refreshConnection", http.MethodPost, "/v1/connections/{id}/refresh", false}
	opCreateConnectSess = op{"createConnectSession", http.MethodPost, "/v1/connect-sessions", false}
	opConnectStart      = op{"openConnectLink", http.MethodGet, "/v1/connect/{session}", false}
	opConnectCallback   = op{"connectCallback", http.MethodGet, "/v1/connect/callback", false}
	opMCPClientMetadata = op{"mcpClientMetadata", http.MethodGet, "/v1/mcp/client-metadata.json", true}
	opOpenAPI           = op{"getOpenAPI", http.MethodGet, "/v1/openapi.json", true}
	opMetrics           = op{"getMetrics", http.MethodGet, "/metrics", true}
	opHealthz           = op{"healthz", http.MethodGet, "/healthz", true}
	opReadyz            = op{"readyz", http.MethodGet, "/readyz", true}
	proxyPath           = "/v1/proxy/{id}/{path}"
	proxyMethods        = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	proxyOps            = proxyOperations()
)

func proxyOperations() map[string]op {
	m := make(map[string]op, len(proxyMethods))
	for _, meth := range proxyMethods {
		// proxyGet, proxyPost, ...
		m[meth] = op{"proxy" + meth[:1] + strings.ToLower(meth[1:]), meth, proxyPath, false}
	}
	return m
}

// operations is every operation the Client covers.
func operations() []op {
	ops := []op{opCreateConnection, opCreateBatch, opListConnections, opGetConnection, opPutConnection, opDeleteConnection,
		opGetToken, opReportStale, opRefreshConnection, opCreateConnectSess, opConnectStart, opConnectCallback,
		opMCPClientMetadata, opOpenAPI, opMetrics, opHealthz, opReadyz,
		opListAudit, opCreateAPIKey, opListAPIKeys, opRevokeAPIKey}
	for _, m := range proxyMethods {
		ops = append(ops, proxyOps[m])
	}
	return ops
}

// CreateConnection imports a connection (POST /v1/connections). Errors:
// [ErrAlreadyExists] when the id is taken, [ErrInvalidRequest] naming the
// field that is wrong.
func (c *Client) CreateConnection(ctx context.Context, in ImportRequest) (*Connection, error) {
	var out Connection
	return &out, c.call(ctx, opCreateConnection, nil, nil, in, &out)
}

// CreateConnections imports up to 1000 connections at once, all or none
// (POST /v1/connections:batch), and returns how many were created: all of
// ins. Errors name the first wrong item by its index and id
// ([ErrInvalidRequest], [ErrAlreadyExists]); nothing of the batch is
// stored then. Client-credentials connections are created one at a time
// with CreateConnection.
func (c *Client) CreateConnections(ctx context.Context, ins []ImportRequest) (int, error) {
	body := struct {
		Connections []ImportRequest `json:"connections"`
	}{ins}
	var out struct {
		Created int `json:"created"`
	}
	err := c.call(ctx, opCreateBatch, nil, nil, body, &out)
	return out.Created, err
}

// PutConnection replaces a connection's tokens, or creates it (PUT
// /v1/connections/{id}); it repairs a connection that needs
// re-authentication. in.ID is taken from id.
func (c *Client) PutConnection(ctx context.Context, id string, in ImportRequest) (*Connection, error) {
	in.ID = id
	var out Connection
	return &out, c.call(ctx, opPutConnection, []string{id}, nil, in, &out)
}

// ListConnections returns one page of connections (GET /v1/connections).
func (c *Client) ListConnections(ctx context.Context, o ListOptions) (*ConnectionList, error) {
	q := url.Values{}
	if o.Provider != "" {
		q.Set("provider", o.Provider)
	}
	if o.Status != "" {
		q.Set("status", string(o.Status))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	var out ConnectionList
	return &out, c.call(ctx, opListConnections, nil, q, nil, &out)
}

// GetConnection returns a connection's state, never its tokens (GET
// /v1/connections/{id}). Errors: [ErrNotFound].
func (c *Client) GetConnection(ctx context.Context, id string) (*Connection, error) {
	var out Connection
	return &out, c.call(ctx, opGetConnection, []string{id}, nil, nil, &out)
}

// DeleteConnection deletes a connection, revoking its tokens where the
// provider can (DELETE /v1/connections/{id}).
func (c *Client) DeleteConnection(ctx context.Context, id string) (*DeleteResult, error) {
	var out DeleteResult
	return &out, c.call(ctx, opDeleteConnection, []string{id}, nil, nil, &out)
}

// Token returns a valid access token for the connection, refreshed by the
// server first if it was due (GET /v1/connections/{id}/token). Errors:
// errors.Is(err, [oauth.ErrReauthRequired]) when a person must reconnect;
// errors.Is(err, [oauth.ErrTransient]) with [oauth.RetryAfter] when the
// provider is unavailable.
func (c *Client) Token(ctx context.Context, id string) (*Token, error) {
	var out Token
	if err := c.call(ctx, opGetToken, []string{id}, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReportStale tells the server that an API rejected stale, the access
// token it handed out, and returns a valid one (POST
// /v1/connections/{id}/token): the server refreshes once however many
// callers report the same token, or hands out the current token when
// someone already has. Errors are those of [Client.Token].
func (c *Client) ReportStale(ctx context.Context, id, stale string) (*Token, error) {
	var out Token
	if err := c.call(ctx, opReportStale, []string{id}, nil, map[string]string{"stale_token": stale}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RefreshConnection refreshes a connection now (POST
// /v1/connections/{id}/refresh; admin keys only).
func (c *Client) RefreshConnection(ctx context.Context, id string) (*Connection, error) {
	var out Connection
	return &out, c.call(ctx, opRefreshConnection, []string{id}, nil, nil, &out)
}

// CreateConnectSession returns a link that runs the OAuth flow for an end
// user and saves the connection (POST /v1/connect-sessions).
func (c *Client) CreateConnectSession(ctx context.Context, in ConnectSessionRequest) (*ConnectSession, error) {
	var out ConnectSession
	return &out, c.call(ctx, opCreateConnectSess, nil, nil, in, &out)
}

// ConnectStartURL is the end user's side of a connect session (GET
// /v1/connect/{session}): a page for a browser, not for this client, so
// it returns the URL rather than calling it. [ConnectSession.URL] is the
// same link.
func (c *Client) ConnectStartURL(session string) string {
	return c.url(opConnectStart, []string{session}, nil)
}

// ConnectCallbackURL is the redirect URI the server registers with
// providers for the connect flow (GET /v1/connect/callback); the provider
// sends the user's browser there.
func (c *Client) ConnectCallbackURL() string { return c.url(opConnectCallback, nil, nil) }

// MCPClientMetadataURL is where the server serves its OAuth Client ID
// Metadata Document (GET /v1/mcp/client-metadata.json), the client_id
// authorization servers of MCP servers fetch (docs/mcp.md).
func (c *Client) MCPClientMetadataURL() string { return c.url(opMCPClientMetadata, nil, nil) }

// OpenAPI returns the server's OpenAPI document (GET /v1/openapi.json).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	var out []byte
	return out, c.call(ctx, opOpenAPI, nil, nil, nil, &out)
}

// Metrics returns the Prometheus exposition (GET /metrics; admin keys).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var out []byte
	return out, c.call(ctx, opMetrics, nil, nil, nil, &out)
}

// Healthz reports whether the server answers (GET /healthz).
func (c *Client) Healthz(ctx context.Context) error {
	return c.call(ctx, opHealthz, nil, nil, nil, nil)
}

// Ready reports whether the server and its database answer (GET /readyz).
func (c *Client) Ready(ctx context.Context) error { return c.call(ctx, opReadyz, nil, nil, nil, nil) }

// Proxy calls the connection's provider API through the server (ANY
// /v1/proxy/{id}/{path}): the server injects the token, and refreshes and
// replays once when the provider rejects it. path is the API path, such as
// "user/repos"; header is sent along (may be nil). The answer is the
// provider's, returned as it is; the caller closes its body. Only an
// answer of the server itself (an error envelope with a code) becomes an
// error. Proxied requests are never retried.
func (c *Client) Proxy(ctx context.Context, method, id, path string, body io.Reader, header http.Header) (*http.Response, error) {
	o, ok := proxyOps[method]
	if !ok {
		return nil, &Error{Op: "proxy", Code: "invalid_request", Message: "method " + method + " cannot be proxied"}
	}
	target := strings.TrimSuffix(c.url(o, []string{id}, nil), "{path}") + strings.TrimPrefix(path, "/")
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, &Error{Op: "proxy", Code: "invalid_request", Message: err.Error()}
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", c.auth)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Op: "proxy", Code: "network", Err: err}
	}
	if resp.Header.Get("Tokenbroker-Error") != "" {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		return nil, apiError("proxy", resp, data)
	}
	return resp, nil
}
