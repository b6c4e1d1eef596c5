package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// ConnectSessionTTL is how long a connect link works: long enough for a
// person to sign in at the provider, short enough that a leaked link is soon
// worthless.
const ConnectSessionTTL = 10 * time.Minute

// AuthCodeEndpoint is what the connect flow needs from a provider's
// authorization server. *oauth.Endpoint satisfies it. A [Provider] whose
// Endpoint does not cannot be connected through the flow.
type AuthCodeEndpoint interface {
	AuthCodeURL(ctx context.Context, state, redirectURI, codeChallenge string, scopes []string, extra url.Values) (string, error)
	Exchange(ctx context.Context, code, redirectURI, codeVerifier string) (*oauth.Token, error)
	// ResponseIssuer is what the authorization response's iss must be
	// (RFC 9207; see issuer.go).
	ResponseIssuer(ctx context.Context) (issuer string, required bool)
}

// ClientCredentialsEndpoint is what a client-credentials connection needs.
// *oauth.Endpoint satisfies it.
type ClientCredentialsEndpoint interface {
	ClientCredentials(ctx context.Context, scopes ...string) (*oauth.Token, error)
}

// Errors of the connect flow. Nothing is stored when one is returned.
var (
	// ErrConnectSessionNotFound: no pending flow has this id or state. It
	// never existed, was already completed (a replay), or expired and was
	// cleaned up.
	ErrConnectSessionNotFound = errors.New("broker: connect session not found; it may have been used already")
	// ErrConnectSessionExpired: the flow was started too long ago.
	ErrConnectSessionExpired = errors.New("broker: connect session expired")
	// ErrProviderMismatch: the connection id belongs to another provider;
	// a grant from one provider never replaces another's tokens.
	ErrProviderMismatch = errors.New("broker: the connection belongs to another provider")
)

// ConnectRequest starts an authorization-code flow that creates connection
// ConnectionID of Provider, or gives an existing one a new grant.
type ConnectRequest struct {
	ConnectionID string
	Provider     string
	// RedirectURL is where the person's browser is sent when the flow
	// ends, with connection_id and status (or error) added to its query.
	// Optional; it must be an absolute http(s) URL. Only admins create
	// sessions, so it is not an open redirect for strangers; still, the
	// flow appends only its own parameters and nothing from the provider.
	RedirectURL string
	// Scopes are requested on top of the provider's configured ones.
	Scopes []string
	// MCPServerURL connects an MCP server known only by its URL, in place
	// of Provider (broker/mcp.go): it is discovered and tokenbroker
	// registers itself with its authorization server when the session is
	// created.
	MCPServerURL string
}

// ConnectResult is a completed flow.
type ConnectResult struct {
	Connection store.Connection
	Session    store.ConnectSession
	// Reconnected is true when an existing connection got the new grant.
	Reconnected bool
}

// scopeToken is RFC 6749 §3.3's scope-token: printable ASCII without
// space, '"' or '\'.
var scopeToken = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,200}$`)

// sessionIDPattern is the shape of the ids [Broker.CreateConnectSession]
// makes; anything else is not looked up.
var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22,100}$`)

// maxScopes bounds the scopes of one request.
const maxScopes = 50

func validateScopes(field string, scopes []string) error {
	if len(scopes) > maxScopes {
		return &ValidationError{field, fmt.Sprintf("at most %d scopes", maxScopes)}
	}
	for _, s := range scopes {
		if !scopeToken.MatchString(s) {
			return &ValidationError{field, fmt.Sprintf("%q is not a scope (RFC 6749 §3.3: printable ASCII without spaces, quotes or backslashes)", shortText(s))}
		}
	}
	return nil
}

func shortText(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// CheckRedirectURL accepts an absolute http or https URL with a host and no
// fragment (the flow adds query parameters to it).
func CheckRedirectURL(raw string) error {
	if len(raw) > 2048 {
		return &ValidationError{"redirect_url", "is longer than 2048 bytes"}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return &ValidationError{"redirect_url", "must be an absolute http or https URL without user info"}
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return &ValidationError{"redirect_url", "must not have a fragment"}
	}
	return nil
}

// mergeScopes returns the provider's scopes followed by extra ones it did
// not have, in order, without duplicates.
func mergeScopes(base, extra []string) []string {
	out := slices.Clone(base)
	for _, s := range extra {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (b *Broker) authCodeProvider(name string) (Provider, AuthCodeEndpoint, error) {
	p, ok := b.providers[name]
	if name == "" {
		return Provider{}, nil, &ValidationError{"provider", "is required"}
	}
	if !ok {
		return Provider{}, nil, b.unknownProvider(name)
	}
	ep, ok := p.Endpoint.(AuthCodeEndpoint)
	if !ok {
		return Provider{}, nil, &ValidationError{"provider", fmt.Sprintf("provider %q does not support the authorization code flow", name)}
	}
	return p, ep, nil
}

// checkOwner fails with ErrProviderMismatch when connection id exists and
// belongs to another provider.
func (b *Broker) checkOwner(ctx context.Context, id, provider string) error {
	c, err := b.store.GetConnection(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case c.Provider != provider:
		return fmt.Errorf("%w: connection %q is a %s connection, not %s", ErrProviderMismatch, id, c.Provider, provider)
	}
	return nil
}

func newSessionID() (string, error) {
	var buf [32]byte // 256 bits: the id is the capability
	if _, err := rand.Read(buf[:]); err != nil {
		return "", fmt.Errorf("broker: connect session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(buf[:]), nil
}

func hashState(state string) []byte {
	h := sha256.Sum256([]byte(state))
	return h[:]
}

func verifierAAD(sessionID string) []byte { return []byte("connect:" + sessionID + ":verifier") }

// CreateConnectSession stores a pending authorization-code flow and returns
// it; its ID goes into the link the person opens. Returns a
// *ValidationError for bad input, and one wrapping ErrProviderMismatch when
// the connection exists with another provider.
func (b *Broker) CreateConnectSession(ctx context.Context, req ConnectRequest) (store.ConnectSession, error) {
	cs := b.store
	if !ValidID(req.ConnectionID) {
		return store.ConnectSession{}, &ValidationError{"connection_id", "must be 1-200 characters of letters, digits and . _ : @ -, starting with a letter or digit"}
	}
	var binding *store.MCP
	if req.MCPServerURL != "" {
		if req.Provider != "" && req.Provider != store.ProviderMCP {
			return store.ConnectSession{}, &ValidationError{"provider", "give either provider or mcp_server_url, not both"}
		}
		if b.mcp == nil {
			return store.ConnectSession{}, &ValidationError{"mcp_server_url", "MCP connections are not enabled on this server (public_url and the mcp config section)"}
		}
		if len(req.MCPServerURL) > 2048 {
			return store.ConnectSession{}, &ValidationError{"mcp_server_url", "is longer than 2048 bytes"}
		}
		req.Provider = store.ProviderMCP
	} else if _, _, err := b.authCodeProvider(req.Provider); err != nil {
		return store.ConnectSession{}, err
	}
	if req.RedirectURL != "" {
		if err := CheckRedirectURL(req.RedirectURL); err != nil {
			return store.ConnectSession{}, err
		}
	}
	if err := validateScopes("scopes", req.Scopes); err != nil {
		return store.ConnectSession{}, err
	}
	if err := b.checkOwner(ctx, req.ConnectionID, req.Provider); err != nil {
		return store.ConnectSession{}, err
	}
	scopes := slices.Clone(req.Scopes)
	if req.MCPServerURL != "" {
		var err error
		if binding, scopes, err = b.prepareMCPSession(ctx, req); err != nil {
			return store.ConnectSession{}, err
		}
	}
	id, err := newSessionID()
	if err != nil {
		return store.ConnectSession{}, err
	}
	now := b.now()
	// Sessions nobody completed are cleaned up here, on the next one,
	// rather than by a background job.
	if n, err := cs.DeleteExpiredConnectSessions(ctx, now); err != nil {
		b.log.WarnContext(ctx, "could not delete expired connect sessions", "error", err)
	} else if n > 0 {
		b.log.DebugContext(ctx, "deleted expired connect sessions", "count", n)
	}
	s := store.ConnectSession{
		ID:           id,
		ConnectionID: req.ConnectionID,
		Provider:     req.Provider,
		RedirectURL:  req.RedirectURL,
		Scopes:       scopes,
		MCP:          binding,
		ExpiresAt:    now.Add(ConnectSessionTTL),
		CreatedAt:    now,
	}
	if err := cs.CreateConnectSession(ctx, s); err != nil {
		return store.ConnectSession{}, err
	}
	b.log.InfoContext(ctx, "connect session created", "connection", s.ConnectionID, "provider", s.Provider,
		"expires_at", s.ExpiresAt)
	return s, nil
}

// BeginConnect starts the authorization request of session sessionID: it
// makes a fresh state (RFC 6749 §10.12) and PKCE verifier (RFC 7636, S256),
// stores them with the session, and returns the provider's authorization
// URL to send the browser to. Opening the link again starts over; only the
// latest request can complete.
//
// Returns ErrConnectSessionNotFound or ErrConnectSessionExpired.
func (b *Broker) BeginConnect(ctx context.Context, sessionID, redirectURI string) (string, error) {
	cs := b.store
	if !sessionIDPattern.MatchString(sessionID) {
		return "", ErrConnectSessionNotFound
	}
	state, err := oauth.NewState()
	if err != nil {
		return "", err
	}
	verifier, challenge, err := oauth.NewPKCE()
	if err != nil {
		return "", err
	}
	sealed, err := b.sealer.Seal([]byte(verifier), verifierAAD(sessionID))
	if err != nil {
		return "", fmt.Errorf("broker: seal PKCE verifier: %w", err)
	}
	s, err := cs.BeginConnectSession(ctx, sessionID, hashState(state), sealed)
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrConnectSessionNotFound
	}
	if err != nil {
		return "", err
	}
	if !b.now().Before(s.ExpiresAt) {
		return "", ErrConnectSessionExpired
	}
	p, ep, err := b.sessionProvider(ctx, s)
	if err != nil {
		return "", err
	}
	extra := url.Values{}
	for k, v := range p.AuthParams {
		extra.Set(k, v)
	}
	if s.MCP != nil {
		extra.Set("resource", s.MCP.Resource) // RFC 8707 §2.1
	}
	authURL, err := ep.AuthCodeURL(ctx, state, redirectURI, challenge, mergeScopes(p.Scopes, s.Scopes), extra)
	if err != nil {
		return "", err
	}
	b.log.InfoContext(ctx, "connect flow sent to the provider", "connection", s.ConnectionID, "provider", s.Provider)
	return authURL, nil
}

// AbortConnect ends the flow bound to state without creating anything, for
// a callback that carries an error (the person denied consent, RFC 6749
// §4.1.2.1). The session cannot be used afterwards. Returns
// ErrConnectSessionNotFound if no flow has this state.
func (b *Broker) AbortConnect(ctx context.Context, state string) (store.ConnectSession, error) {
	cs := b.store
	s, err := cs.ConsumeConnectSession(ctx, hashState(state))
	if errors.Is(err, store.ErrNotFound) {
		return store.ConnectSession{}, ErrConnectSessionNotFound
	}
	if err != nil {
		return store.ConnectSession{}, err
	}
	b.log.InfoContext(ctx, "connect flow ended without a grant", "connection", s.ConnectionID, "provider", s.Provider)
	return s, nil
}

// CompleteConnect finishes the flow bound to state: it consumes the session
// (so a replayed callback fails), redeems code with the session's PKCE
// verifier, and saves the grant with [Broker.ConnectWithToken].
//
// Returns ErrConnectSessionNotFound (unknown or replayed state),
// ErrConnectSessionExpired, an error wrapping ErrProviderMismatch, or the
// token endpoint's *oauth.Error. The session is used up in every case, and
// no connection is created or changed unless the whole flow succeeds. The
// returned session (when known) carries the redirect URL.
func (b *Broker) CompleteConnect(ctx context.Context, state, code, redirectURI string) (ConnectResult, error) {
	return b.CompleteConnectResponse(ctx, AuthorizationResponse{State: state, Code: code}, redirectURI)
}

// CompleteConnectResponse is [Broker.CompleteConnect] for the whole
// authorization response, whose iss is checked (RFC 9207, issuer.go)
// before the code is redeemed; a mismatch returns an error wrapping
// oauth.ErrIssuerMismatch and uses the session up.
func (b *Broker) CompleteConnectResponse(ctx context.Context, resp AuthorizationResponse, redirectURI string) (ConnectResult, error) {
	state, code := resp.State, resp.Code
	cs := b.store
	s, err := cs.ConsumeConnectSession(ctx, hashState(state))
	if errors.Is(err, store.ErrNotFound) {
		return ConnectResult{}, ErrConnectSessionNotFound
	}
	if err != nil {
		return ConnectResult{}, err
	}
	res := ConnectResult{Session: s}
	if !b.now().Before(s.ExpiresAt) {
		return res, ErrConnectSessionExpired
	}
	if code == "" {
		return res, &ValidationError{"code", "the provider sent no authorization code"}
	}
	verifier, err := b.sealer.Open(s.Verifier, verifierAAD(s.ID))
	if err != nil {
		return res, fmt.Errorf("broker: connect session of %q: cannot decrypt the PKCE verifier: %w", s.ConnectionID, err)
	}
	_, ep, err := b.sessionProvider(ctx, s)
	if err != nil {
		return res, err
	}
	if err := b.checkResponseIssuer(ctx, s, ep, resp); err != nil {
		return res, err
	}
	if err := b.checkOwner(ctx, s.ConnectionID, s.Provider); err != nil {
		return res, err
	}
	// The code is redeemed on a detached context: once the provider has
	// answered, the grant is saved even if the browser went away.
	xctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	tok, err := ep.Exchange(xctx, code, redirectURI, string(verifier))
	cancel()
	if err != nil {
		b.log.WarnContext(ctx, "connect flow: the provider refused the authorization code",
			"connection", s.ConnectionID, "provider", s.Provider, "error", err)
		return res, err
	}
	if tok.Scope == "" {
		// RFC 6749 §5.1: no scope in the answer means the requested ones.
		if p, ok := b.providers[s.Provider]; ok {
			tok.Scope = strings.Join(mergeScopes(p.Scopes, s.Scopes), " ")
		}
	}
	c, reconnected, err := b.saveGrant(context.WithoutCancel(ctx), s.ConnectionID, s.Provider, "", tok, nil, false, s.MCP)
	if err != nil {
		return res, err
	}
	res.Connection, res.Reconnected = c, reconnected
	return res, nil
}

// ConnectWithToken saves a grant the provider has just issued (an
// authorization code redeemed elsewhere, say) as connection id: it creates
// the connection, or replaces the tokens of the existing one. A reconnected
// connection is active again with its failure cleared; when it was failing
// (needs_reauth, or in a backoff) a connection.recovered event says so. A
// new one emits connection.created. Its metadata is kept.
//
// Returns a *ValidationError for bad input and an error wrapping
// ErrProviderMismatch when id belongs to another provider.
func (b *Broker) ConnectWithToken(ctx context.Context, id, provider string, tok *oauth.Token) (store.Connection, error) {
	c, _, err := b.saveGrant(ctx, id, provider, "", tok, nil, false, nil)
	return c, err
}

// saveGrant creates connection id from a fresh grant, or (unless
// createOnly) replaces an existing connection's tokens with it.
//
// binding is the MCP server of an MCP connection (nil otherwise); needed
// scopes the new grant covers are cleared from it.
func (b *Broker) saveGrant(ctx context.Context, id, provider, grant string, tok *oauth.Token, metadata json.RawMessage, createOnly bool, binding *store.MCP) (store.Connection, bool, error) {
	if !ValidID(id) {
		return store.Connection{}, false, &ValidationError{"id", "must be 1-200 characters of letters, digits and . _ : @ -, starting with a letter or digit"}
	}
	p, ok := b.providers[provider]
	if !ok {
		return store.Connection{}, false, b.unknownProvider(provider)
	}
	if (provider == store.ProviderMCP) != (binding != nil) {
		return store.Connection{}, false, &ValidationError{"provider", "MCP connections are made by a connect session with mcp_server_url"}
	}
	if tok == nil || tok.AccessToken == "" {
		return store.Connection{}, false, &ValidationError{"access_token", "the provider issued no access token"}
	}
	if len(tok.AccessToken) > maxTokenLen || len(tok.RefreshToken) > maxTokenLen {
		return store.Connection{}, false, &ValidationError{"access_token", "the provider issued a token longer than 16 KiB"}
	}
	now := b.now()
	// fill lands the grant in a row: a new one, or an existing connection
	// being reconnected. It may run more than once (a lost race re-reads).
	fill := func(c store.Connection) (store.Connection, error) {
		c.Grant = grant
		if metadata != nil {
			c.Metadata = metadata
		}
		c, err := b.land(c, lifecycle.Granted, tok, p, now)
		if err != nil {
			return c, err
		}
		c.MCP = withGrantedScopes(binding, c.Scope)
		return c, nil
	}

	c, err := fill(store.Connection{ID: id, Provider: provider})
	if err != nil {
		return store.Connection{}, false, err
	}
	// The event is queued in the same write as the row (the store's
	// outbox), then told to in-process listeners.
	created := []Event{b.event(EventCreated, &c, "")}
	saved, err := b.store.CreateConnection(ctx, c, created...)
	reconnected := false
	switch {
	case err == nil:
		b.log.InfoContext(ctx, "connection created", "connection", id, "provider", provider, "grant", grantName(grant))
		b.emit(ctx, created)
	case errors.Is(err, store.ErrAlreadyExists) && !createOnly:
		saved, reconnected, err = b.replaceGrant(ctx, id, provider, fill)
		if err != nil {
			return store.Connection{}, false, err
		}
	default:
		return store.Connection{}, false, err
	}
	// Saved first (the grant is live at the provider); then learn the real
	// expiry once, if the provider tells, which reschedules the refresh.
	return b.learnExpiry(ctx, saved, p, tok.AccessToken), reconnected, nil
}

// replaceGrant puts a new grant into an existing connection. Anything a
// refresh of the old grant left unsaved is dropped: the old refresh token
// must never overwrite the new one.
func (b *Broker) replaceGrant(ctx context.Context, id, provider string, fill func(store.Connection) (store.Connection, error)) (store.Connection, bool, error) {
	var (
		wasFailing bool
		queued     []Event
	)
	saved, err := store.Update(ctx, b.store, id, func(old store.Connection) (store.Connection, []Event, error) {
		if old.Provider != provider {
			return old, nil, fmt.Errorf("%w: connection %q is a %s connection, not %s", ErrProviderMismatch, id, old.Provider, provider)
		}
		g := grantOf(&old)
		wasFailing = g.Failing()
		next, err := fill(old)
		if err != nil {
			return old, nil, err
		}
		queued = nil
		if wasFailing {
			queued = []Event{b.event(EventRecovered, &next, "")}
		}
		return next, queued, nil
	})
	b.forgetUnsaved(id)
	b.written(id)
	if err != nil {
		return store.Connection{}, false, err
	}
	b.log.InfoContext(ctx, "connection reconnected with a new grant", "connection", id, "provider", provider,
		"was_failing", wasFailing)
	b.emit(ctx, queued)
	return saved, true, nil
}

func grantName(grant string) string {
	if grant == "" {
		return "authorization_code"
	}
	return grant
}

// ClientCredentialsImport asks the broker to create a connection that holds
// the client's own token (RFC 6749 §4.4) rather than a person's.
type ClientCredentialsImport struct {
	ID       string
	Provider string
	// Scopes are requested on top of the provider's configured ones.
	Scopes   []string
	Metadata json.RawMessage
}

// CreateClientCredentialsConnection obtains a token with the provider's
// client credentials and stores it as a new connection. Having no refresh
// token, the connection is renewed by asking again, through the same single
// flight and lease as a refresh. Returns a *ValidationError for bad input,
// ErrAlreadyExists when the id is taken (the provider is not called), or
// the token endpoint's *oauth.Error.
func (b *Broker) CreateClientCredentialsConnection(ctx context.Context, in ClientCredentialsImport) (store.Connection, error) {
	if !ValidID(in.ID) {
		return store.Connection{}, &ValidationError{"id", "must be 1-200 characters of letters, digits and . _ : @ -, starting with a letter or digit"}
	}
	if in.Provider == "" {
		return store.Connection{}, &ValidationError{"provider", "is required"}
	}
	p, ok := b.providers[in.Provider]
	if !ok {
		return store.Connection{}, b.unknownProvider(in.Provider)
	}
	ep, ok := p.Endpoint.(ClientCredentialsEndpoint)
	if !ok {
		return store.Connection{}, &ValidationError{"grant", fmt.Sprintf("provider %q does not support the client credentials grant", in.Provider)}
	}
	if err := validateScopes("scopes", in.Scopes); err != nil {
		return store.Connection{}, err
	}
	if len(in.Metadata) > 0 && !json.Valid(in.Metadata) {
		return store.Connection{}, &ValidationError{"metadata", "is not valid JSON"}
	}
	if len(in.Metadata) > 64<<10 {
		return store.Connection{}, &ValidationError{"metadata", "is larger than 64 KiB"}
	}
	if _, err := b.store.GetConnection(ctx, in.ID); err == nil {
		return store.Connection{}, fmt.Errorf("broker: connection %q: %w", in.ID, store.ErrAlreadyExists)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Connection{}, err
	}
	scopes := mergeScopes(p.Scopes, in.Scopes)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	tok, err := ep.ClientCredentials(cctx, scopes...)
	cancel()
	if err != nil {
		return store.Connection{}, err
	}
	// RFC 6749 §4.4.3: a refresh token SHOULD NOT be issued here; renewal
	// asks again, so one that came anyway is not kept.
	tok.RefreshToken = ""
	if tok.Scope == "" {
		tok.Scope = strings.Join(scopes, " ")
	}
	c, _, err := b.saveGrant(ctx, in.ID, in.Provider, store.GrantClientCredentials, tok, in.Metadata, true, nil)
	return c, err
}

// renewClientCredentials is the provider call of a refresh flight for a
// client-credentials connection: the lease is held by the caller, as for a
// refresh; the token comes from the client credentials grant, asking for
// the scopes the connection holds.
func (b *Broker) renewClientCredentials(ctx context.Context, c *store.Connection, p Provider, l *lease, origin lifecycle.Origin) (Token, error) {
	ep, ok := p.Endpoint.(ClientCredentialsEndpoint)
	if !ok {
		err := &oauth.Error{Op: "client_credentials", Code: "unsupported_grant_type", Kind: oauth.KindTerminal,
			Description: "the provider's endpoint does not support the client credentials grant"}
		return Token{}, b.recordFailure(ctx, c, p, err)
	}
	scopes := strings.Fields(c.Scope)
	if len(scopes) == 0 {
		scopes = p.Scopes
	}
	tok, err := b.callProvider(ctx, c, p, l, func(ctx context.Context) (*oauth.Token, error) {
		return ep.ClientCredentials(ctx, scopes...)
	})
	if errors.Is(err, errRateLimited) {
		return Token{}, err
	}
	if err != nil {
		return Token{}, b.recordFailure(ctx, c, p, err)
	}
	tok.RefreshToken = ""
	saved, err := b.saveRenewed(ctx, c, p, tok, b.now(), origin)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Token{}, err // deleted meanwhile: its token goes with it
		}
		// Nothing is spent by asking again, so an unsaved token is simply
		// handed out; the next flight asks for another.
		b.log.ErrorContext(ctx, "renewed client-credentials token could not be saved", "connection", c.ID,
			"provider", c.Provider, "error", err)
		return answered(c, tok), nil
	}
	return b.tokenOf(&saved)
}
