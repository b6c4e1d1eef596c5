package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// EventScopeRequired is queued when an MCP server answers a call with 403
// insufficient_scope: the connection needs a person to consent to more
// (a step-up); its needed scopes say which.
const EventScopeRequired = "connection.scope_required"

// MCPOptions enables connections to MCP servers known only by URL (see
// docs/mcp.md).
type MCPOptions struct {
	// Policy says which hosts discovery, registration and token requests
	// may reach; the zero value allows public https hosts only.
	Policy mcpauth.HostPolicy
	// HTTPClient makes those requests. Default: [mcpauth.NewHTTPClient]
	// with Policy.
	HTTPClient *http.Client
	// RedirectURI is the connect flow's callback (public_url +
	// /v1/connect/callback), registered with every authorization server.
	// Required.
	RedirectURI string
	// ClientName is shown on consent screens. Default "tokenbroker".
	ClientName string
	// ClientMetadataURL is the https URL where tokenbroker serves its
	// Client ID Metadata Document; it is used as client_id at
	// authorization servers that support such documents. Empty: never.
	ClientMetadataURL string
	// Clients are clients registered by hand, by issuer; they take
	// precedence over any other way of getting one.
	Clients map[string]MCPClient
	// Lifecycle is the lifecycle policy of MCP connections (refresh
	// window, default lifetime, …); its zero value takes the defaults.
	Lifecycle lifecycle.Policy
}

// MCPClient is a client registered by hand at one authorization server.
type MCPClient struct {
	ClientID     string
	ClientSecret string
	// TokenEndpointAuthMethod as in RFC 7591; empty picks by the secret.
	TokenEndpointAuthMethod string
}

// Registration methods recorded in [store.MCPRegistration.Method].
const (
	RegistrationConfigured       = "configured"
	RegistrationMetadataDocument = "metadata_document"
	RegistrationDynamic          = "dynamic"
)

// mcpConnector is the broker's MCP side: discovery, one registration per
// issuer, and an endpoint per connection that sends its resource.
type mcpConnector struct {
	opts   MCPOptions
	client *http.Client
	regs   store.MCPRegistrations
	styles *oauth.AuthStyleCache
	group  singleflight.Group
}

func newMCPConnector(opts MCPOptions, st Store) (*mcpConnector, error) {
	if opts.RedirectURI == "" {
		return nil, errors.New("broker: MCP: RedirectURI is required (set public_url)")
	}
	regs, ok := st.(store.MCPRegistrations)
	if !ok {
		return nil, errors.New("broker: MCP: the store does not keep MCP registrations")
	}
	if opts.ClientName == "" {
		opts.ClientName = "tokenbroker"
	}
	client := opts.HTTPClient
	if client == nil {
		client = mcpauth.NewHTTPClient(opts.Policy, 0, nil)
	}
	return &mcpConnector{opts: opts, client: client, regs: regs, styles: &oauth.AuthStyleCache{}}, nil
}

func (m *mcpConnector) authOptions() mcpauth.Options {
	return mcpauth.Options{Client: m.client, Policy: m.opts.Policy}
}

// storedMetadata is the authorization server metadata kept with a
// registration, under RFC 8414's names.
type storedMetadata struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint,omitempty"`
	RegistrationEndpoint  string   `json:"registration_endpoint,omitempty"`
	ScopesSupported       []string `json:"scopes_supported,omitempty"`
}

func (sm storedMetadata) oauth() *oauth.Metadata {
	return &oauth.Metadata{Issuer: sm.Issuer, AuthorizationEndpoint: sm.AuthorizationEndpoint,
		TokenEndpoint: sm.TokenEndpoint, RevocationEndpoint: sm.RevocationEndpoint,
		RegistrationEndpoint: sm.RegistrationEndpoint, ScopesSupported: sm.ScopesSupported}
}

func registrationAAD(issuer string) []byte {
	return []byte("mcp-registration:" + issuer + ":client_secret")
}

// MCPError is a failure to discover or register with an MCP server when a
// connect session is created: the URL or its servers are not usable. The
// message says what was wrong; it names URLs, never secrets.
type MCPError struct{ Err error }

func (e *MCPError) Error() string { return "mcp_server_url: " + e.Err.Error() }
func (e *MCPError) Unwrap() error { return e.Err }

// prepareMCP discovers the server at serverURL and makes sure tokenbroker
// has a client at its authorization server. It returns the binding for the
// session and the scopes discovery chose.
func (b *Broker) prepareMCP(ctx context.Context, serverURL string) (*store.MCP, []string, error) {
	m := b.mcp
	d, err := mcpauth.Discover(ctx, m.authOptions(), serverURL)
	if err != nil {
		return nil, nil, &MCPError{err}
	}
	if _, err := b.ensureRegistration(ctx, d.Issuer, d.Metadata); err != nil {
		return nil, nil, &MCPError{err}
	}
	binding := &store.MCP{ServerURL: serverURL, Resource: d.Resource, Issuer: d.Issuer}
	return binding, d.Scopes(d.Challenge), nil
}

// ensureRegistration returns the issuer's stored registration, or makes
// one: a configured client, else a Client ID Metadata Document, else
// Dynamic Client Registration (RFC 7591). Concurrent first connections to
// one issuer register once (per process).
func (b *Broker) ensureRegistration(ctx context.Context, issuer string, md *oauth.Metadata) (store.MCPRegistration, error) {
	m := b.mcp
	// A stored registration is used while it still fits: the same
	// callback, and the configured client if one is configured now.
	fits := func(r store.MCPRegistration) bool {
		c, configured := m.opts.Clients[issuer]
		return r.RedirectURI == m.opts.RedirectURI && (!configured || r.ClientID == c.ClientID)
	}
	sm := storedMetadata{Issuer: md.Issuer, AuthorizationEndpoint: md.AuthorizationEndpoint,
		TokenEndpoint: md.TokenEndpoint, RevocationEndpoint: md.RevocationEndpoint,
		RegistrationEndpoint: md.RegistrationEndpoint, ScopesSupported: md.ScopesSupported}
	if len(sm.ScopesSupported) == 0 {
		sm.ScopesSupported = nil // as it reads back
	}
	raw, err := json.Marshal(sm)
	if err != nil {
		return store.MCPRegistration{}, err
	}
	// A registration that fits keeps its client, with the metadata just
	// discovered: refreshes use the endpoints the server publishes now.
	current := func(r store.MCPRegistration) (store.MCPRegistration, error) {
		var old storedMetadata
		if json.Unmarshal(r.Metadata, &old) == nil && reflect.DeepEqual(old, sm) {
			return r, nil
		}
		r.Metadata = raw
		return m.regs.PutMCPRegistration(ctx, r)
	}
	if r, err := m.regs.GetMCPRegistration(ctx, issuer); err == nil && fits(r) {
		return current(r)
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.MCPRegistration{}, err
	}
	v, err, _ := m.group.Do(issuer, func() (any, error) {
		if r, err := m.regs.GetMCPRegistration(ctx, issuer); err == nil && fits(r) {
			return current(r)
		}
		reg := store.MCPRegistration{Issuer: issuer, RedirectURI: m.opts.RedirectURI, Metadata: raw}
		var secret string
		switch c, ok := m.opts.Clients[issuer]; {
		case ok:
			reg.Method, reg.ClientID, secret = RegistrationConfigured, c.ClientID, c.ClientSecret
			reg.TokenEndpointAuthMethod = c.TokenEndpointAuthMethod
		case md.ClientIDMetadataDocumentSupported && m.opts.ClientMetadataURL != "":
			reg.Method, reg.ClientID, reg.TokenEndpointAuthMethod = RegistrationMetadataDocument, m.opts.ClientMetadataURL, "none"
		default:
			r, err := mcpauth.Register(ctx, m.authOptions(), md, mcpauth.ClientMetadata{
				RedirectURIs: []string{m.opts.RedirectURI},
				ClientName:   m.opts.ClientName,
			})
			if err != nil {
				return nil, err
			}
			reg.Method, reg.ClientID, secret = RegistrationDynamic, r.ClientID, r.ClientSecret
			reg.TokenEndpointAuthMethod = r.TokenEndpointAuthMethod
		}
		if secret != "" {
			sealed, err := b.sealer.Seal([]byte(secret), registrationAAD(issuer))
			if err != nil {
				return nil, fmt.Errorf("broker: seal MCP client secret: %w", err)
			}
			reg.ClientSecret = sealed
		}
		saved, err := m.regs.PutMCPRegistration(ctx, reg)
		if err != nil {
			return nil, err
		}
		b.log.InfoContext(ctx, "MCP client registration stored", "issuer", issuer, "method", reg.Method)
		return saved, nil
	})
	if err != nil {
		return store.MCPRegistration{}, err
	}
	return v.(store.MCPRegistration), nil
}

// mcpEndpoint is the token endpoint of one MCP connection: every grant
// carries the connection's resource. An invalid_client answer means the
// authorization server forgot the registration; it is deleted so the next
// connect session registers again.
type mcpEndpoint struct {
	*oauth.Endpoint
	forget func()
}

func (e *mcpEndpoint) check(err error) error {
	var oe *oauth.Error
	if errors.As(err, &oe) && oe.Code == "invalid_client" {
		e.forget()
	}
	return err
}

func (e *mcpEndpoint) Refresh(ctx context.Context, refreshToken string) (*oauth.Token, error) {
	tok, err := e.Endpoint.Refresh(ctx, refreshToken)
	return tok, e.check(err)
}

func (e *mcpEndpoint) Exchange(ctx context.Context, code, redirectURI, codeVerifier string) (*oauth.Token, error) {
	tok, err := e.Endpoint.Exchange(ctx, code, redirectURI, codeVerifier)
	return tok, e.check(err)
}

// mcpProvider returns the provider (policy and endpoint) of an MCP
// binding, from its issuer's stored registration.
func (b *Broker) mcpProvider(ctx context.Context, binding *store.MCP) (Provider, *mcpEndpoint, error) {
	notReady := func(desc string) error {
		return &oauth.Error{Op: "refresh", Code: "mcp_not_registered", Kind: oauth.KindTerminal, Description: desc}
	}
	if b.mcp == nil {
		return Provider{}, nil, &oauth.Error{Op: "refresh", Code: "provider_not_configured", Kind: oauth.KindTransient,
			Description: "MCP connections are not enabled (config mcp)"}
	}
	m := b.mcp
	reg, err := m.regs.GetMCPRegistration(ctx, binding.Issuer)
	if errors.Is(err, store.ErrNotFound) {
		return Provider{}, nil, notReady("tokenbroker has no client at " + binding.Issuer + " any more; reconnect")
	}
	if err != nil {
		return Provider{}, nil, err
	}
	var sm storedMetadata
	if err := json.Unmarshal(reg.Metadata, &sm); err != nil {
		return Provider{}, nil, fmt.Errorf("broker: stored metadata of %s: %w", binding.Issuer, err)
	}
	var secret string
	if len(reg.ClientSecret) > 0 {
		p, err := b.sealer.Open(reg.ClientSecret, registrationAAD(reg.Issuer))
		if err != nil {
			return Provider{}, nil, fmt.Errorf("broker: cannot decrypt the MCP client secret of %s: %w", reg.Issuer, err)
		}
		secret = string(p)
	}
	cfg := mcpauth.EndpointConfig(sm.oauth(), &mcpauth.Registration{ClientID: reg.ClientID, ClientSecret: secret,
		TokenEndpointAuthMethod: reg.TokenEndpointAuthMethod}, binding.Resource)
	cfg.HTTPClient = m.client
	cfg.AuthStyles = m.styles
	cfg.Now = b.now
	cfg.Logger = b.log
	ep, err := oauth.NewEndpoint(cfg)
	if err != nil {
		return Provider{}, nil, fmt.Errorf("broker: MCP endpoint of %s: %w", reg.Issuer, err)
	}
	issuer, clientID := reg.Issuer, reg.ClientID
	me := &mcpEndpoint{Endpoint: ep, forget: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.regs.DeleteMCPRegistration(ctx, issuer, clientID); err == nil {
			b.log.Warn("the authorization server does not know tokenbroker's client any more; the registration is forgotten and made again on the next connect",
				"issuer", issuer)
		}
	}}
	p := b.providers[store.ProviderMCP]
	p.Endpoint = me
	p.CanRevoke = sm.RevocationEndpoint != ""
	return p, me, nil
}

// mcpPolicy is the provider entry of all MCP connections: policy only; the
// endpoint is each connection's own (mcpProvider).
func mcpPolicy(opts MCPOptions) Provider {
	return Provider{Name: store.ProviderMCP, Endpoint: noEndpoint{}, Policy: opts.Lifecycle}
}

// noEndpoint stands in for the endpoint of the MCP provider entry, which
// is never called: every MCP connection gets its own.
type noEndpoint struct{}

var errNoEndpoint = &oauth.Error{Op: "refresh", Code: "provider_not_configured", Kind: oauth.KindTransient,
	Description: "an MCP connection without its MCP binding"}

func (noEndpoint) Refresh(context.Context, string) (*oauth.Token, error) { return nil, errNoEndpoint }
func (noEndpoint) Introspect(context.Context, string, string) (*oauth.Introspection, error) {
	return nil, errNoEndpoint
}
func (noEndpoint) Revoke(context.Context, string, string) error { return errNoEndpoint }

// RecordScopeNeeded records that the MCP server of connection id refused a
// call for want of scopes (403 insufficient_scope, RFC 6750 §3.1): those
// the grant lacks become the connection's needed scopes, shown in the API
// and dashboard, and the next connect session asks for them. A
// connection.scope_required event is queued when the set grows. This is
// never a reason to refresh: a refresh cannot add consent.
func (b *Broker) RecordScopeNeeded(ctx context.Context, id string, scopes []string) (store.Connection, error) {
	if err := validateScopes("scope", scopes); err != nil {
		return store.Connection{}, err
	}
	var queued []Event
	c, err := b.store.UpdateConnection(ctx, id, func(old store.Connection) (store.Connection, []Event, error) {
		queued = nil
		if old.MCP == nil {
			return old, nil, errUnchanged
		}
		granted := strings.Fields(old.Scope)
		m := *old.MCP
		m.NeededScopes = slices.Clone(m.NeededScopes)
		grew := false
		for _, s := range scopes {
			if !slices.Contains(granted, s) && !slices.Contains(m.NeededScopes, s) {
				m.NeededScopes = append(m.NeededScopes, s)
				grew = true
			}
		}
		if !grew {
			return old, nil, errUnchanged
		}
		old.MCP = &m
		queued = []Event{b.event(EventScopeRequired, &old, "insufficient_scope")}
		return old, queued, nil
	})
	if errors.Is(err, errUnchanged) {
		return b.store.GetConnection(ctx, id)
	}
	if err != nil {
		return store.Connection{}, err
	}
	b.written(id)
	b.log.InfoContext(ctx, "MCP server asks for more scopes; a person must consent", "connection", id,
		"needed", strings.Join(c.MCP.NeededScopes, " "))
	b.emit(ctx, queued)
	return c, nil
}

var errUnchanged = errors.New("broker: unchanged")

// MCPCanRevoke reports whether the authorization server of an MCP binding
// has a revocation endpoint (RFC 7009), so that deleting the connection
// revokes its tokens there.
func (b *Broker) MCPCanRevoke(ctx context.Context, binding *store.MCP) bool {
	p, _, err := b.mcpProvider(ctx, binding)
	return err == nil && p.CanRevoke
}

// MCPConnection returns the MCP binding of connection id, or nil when it is
// not an MCP connection.
func (b *Broker) MCPConnection(ctx context.Context, id string) (*store.MCP, error) {
	c, err := b.store.GetConnection(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.MCP, nil
}

// prepareMCPSession discovers the MCP server of a connect request and
// returns the session's binding and scopes: those discovery chose, those
// asked for, and, for an existing connection, those it was granted and
// those a step-up said it needs.
func (b *Broker) prepareMCPSession(ctx context.Context, req ConnectRequest) (*store.MCP, []string, error) {
	var existing *store.Connection
	c, err := b.store.GetConnection(ctx, req.ConnectionID)
	switch {
	case err == nil:
		if c.MCP != nil && c.MCP.ServerURL != req.MCPServerURL {
			return nil, nil, fmt.Errorf("%w: connection %q is for MCP server %s, not %s", ErrProviderMismatch,
				req.ConnectionID, c.MCP.ServerURL, req.MCPServerURL)
		}
		existing = &c
	case !errors.Is(err, store.ErrNotFound):
		return nil, nil, err
	}
	binding, scopes, err := b.prepareMCP(ctx, req.MCPServerURL)
	if err != nil {
		return nil, nil, err
	}
	scopes = mergeScopes(scopes, req.Scopes)
	if existing != nil {
		scopes = mergeScopes(scopes, strings.Fields(existing.Scope))
		if existing.MCP != nil {
			scopes = mergeScopes(scopes, existing.MCP.NeededScopes)
			binding.NeededScopes = slices.Clone(existing.MCP.NeededScopes)
		}
	}
	if err := validateScopes("scopes", scopes); err != nil {
		return nil, nil, &MCPError{fmt.Errorf("the server's scopes: %w", err)}
	}
	return binding, scopes, nil
}

// sessionProvider returns the provider and authorization endpoint of a
// connect session: its MCP server's, or its configured provider's.
func (b *Broker) sessionProvider(ctx context.Context, s store.ConnectSession) (Provider, AuthCodeEndpoint, error) {
	if s.MCP == nil {
		return b.authCodeProvider(s.Provider)
	}
	p, ep, err := b.mcpProvider(ctx, s.MCP)
	if err != nil {
		return Provider{}, nil, err
	}
	return p, ep, nil
}

// withGrantedScopes returns a copy of binding whose needed scopes no
// longer list those of granted (a space-separated scope).
func withGrantedScopes(binding *store.MCP, granted string) *store.MCP {
	if binding == nil {
		return nil
	}
	m := *binding
	have := strings.Fields(granted)
	m.NeededScopes = nil
	for _, s := range binding.NeededScopes {
		if !slices.Contains(have, s) {
			m.NeededScopes = append(m.NeededScopes, s)
		}
	}
	return &m
}

// mcpLazyProvider is the provider of an MCP connection as the refresh
// path sees it: the MCP policy, and an endpoint that reads the issuer's
// registration only when a token request is actually made, so that
// serving a valid token costs no extra read.
func (b *Broker) mcpLazyProvider(binding *store.MCP) (Provider, error) {
	if b.mcp == nil {
		return Provider{}, &oauth.Error{Op: "refresh", Code: "provider_not_configured", Kind: oauth.KindTransient,
			Description: "MCP connections are not enabled (config mcp)"}
	}
	p := b.providers[store.ProviderMCP]
	p.Endpoint = lazyMCPEndpoint{b: b, binding: *binding}
	// Revoke is a no-op at an issuer without a revocation endpoint.
	p.CanRevoke = true
	return p, nil
}

type lazyMCPEndpoint struct {
	b       *Broker
	binding store.MCP
}

func (e lazyMCPEndpoint) resolve(ctx context.Context) (Provider, *mcpEndpoint, error) {
	return e.b.mcpProvider(ctx, &e.binding)
}

func (e lazyMCPEndpoint) Refresh(ctx context.Context, refreshToken string) (*oauth.Token, error) {
	_, ep, err := e.resolve(ctx)
	if err != nil {
		return nil, err
	}
	return ep.Refresh(ctx, refreshToken)
}

func (e lazyMCPEndpoint) Introspect(ctx context.Context, token, hint string) (*oauth.Introspection, error) {
	_, ep, err := e.resolve(ctx)
	if err != nil {
		return nil, err
	}
	return ep.Introspect(ctx, token, hint)
}

func (e lazyMCPEndpoint) Revoke(ctx context.Context, token, hint string) error {
	p, ep, err := e.resolve(ctx)
	if err != nil || !p.CanRevoke {
		return err
	}
	return ep.Revoke(ctx, token, hint)
}
