package authztest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
)

// Subject is the resource owner for whom the authorization endpoint consents.
const Subject = "authztest-user"

// Client authentication methods at the token endpoint (RFC 8414 §2,
// token_endpoint_auth_methods_supported).
const (
	AuthMethodBasic = "client_secret_basic" // HTTP Basic, RFC 6749 §2.3.1
	AuthMethodPost  = "client_secret_post"  // client_id and client_secret form fields
)

// Endpoint paths, relative to [Server.URL].
const (
	authorizePath     = "/oauth2/auth"
	tokenPath         = "/oauth2/token"
	introspectionPath = "/oauth2/introspect"
	revocationPath    = "/oauth2/revoke"
	callbackPath      = "/callback"
)

// Options configure a [Server]. The zero value is a usable server.
//
// There is no clock option: fosite reads the wall clock itself. Use
// [Server.Expire] to make a token expired.
type Options struct {
	// AccessTokenLifespan is the access token lifetime, sent as expires_in.
	// Zero means one hour.
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan is the refresh token lifetime. Zero means refresh
	// tokens never expire.
	RefreshTokenLifespan time.Duration
	// ReuseGrace, when positive, lets a used refresh token be replayed for
	// this long after its first use: each replay answers with a fresh pair
	// and the grant survives, as with Atlassian, Xero or ORY Hydra's grace
	// period. Zero means strict rotation: any replay revokes the grant.
	ReuseGrace time.Duration
	// TokenDelay holds back every token-endpoint answer for this long after
	// the request has been processed (tokens issued and rotated), so a test
	// can lose the answer by cancelling the request: the rotation has
	// happened at the provider, the client never saw it. A cancelled request
	// ends the wait. See also [Server.SetTokenDelay].
	TokenDelay time.Duration
	// Scopes the client may request. Nil means read, write, offline and
	// offline_access. Every authorization-code grant gets a refresh token,
	// whatever its scopes.
	Scopes []string
	// TokenEndpointAuthMethod is the one client authentication method the
	// token and revocation endpoints accept: [AuthMethodBasic] or
	// [AuthMethodPost]. Empty means both.
	TokenEndpointAuthMethod string
	// ResponseIssuer adds iss to authorization responses and advertises
	// authorization_response_iss_parameter_supported (RFC 9207).
	ResponseIssuer bool
	// Resource, when set, makes the server an authorization server of one
	// protected resource (an MCP server): authorization requests, code
	// exchanges and refreshes must carry exactly this RFC 8707 resource
	// indicator or are refused with invalid_target, and tokens are issued
	// with it as their audience. See mcp.go.
	Resource string
	// DynamicRegistration serves RFC 7591 client registration at
	// [Server.RegistrationURL] and advertises it in the metadata.
	DynamicRegistration bool
}

func (o *Options) setDefaults() error {
	switch {
	case o.AccessTokenLifespan < 0:
		return fmt.Errorf("AccessTokenLifespan is negative (%v)", o.AccessTokenLifespan)
	case o.RefreshTokenLifespan < 0:
		return fmt.Errorf("RefreshTokenLifespan is negative (%v); use 0 for refresh tokens that never expire", o.RefreshTokenLifespan)
	case o.ReuseGrace < 0:
		return fmt.Errorf("ReuseGrace is negative (%v)", o.ReuseGrace)
	case o.TokenDelay < 0:
		return fmt.Errorf("TokenDelay is negative (%v)", o.TokenDelay)
	}
	switch o.TokenEndpointAuthMethod {
	case "", AuthMethodBasic, AuthMethodPost:
	default:
		return fmt.Errorf("TokenEndpointAuthMethod %q is not %q, %q or empty", o.TokenEndpointAuthMethod, AuthMethodBasic, AuthMethodPost)
	}
	if o.AccessTokenLifespan == 0 {
		o.AccessTokenLifespan = time.Hour
	}
	if o.Scopes == nil {
		o.Scopes = []string{"read", "write", "offline", "offline_access"}
	}
	o.Scopes = slices.Clone(o.Scopes)
	return nil
}

// Server is a running authorization server with one confidential client.
// Its methods are safe for concurrent use. Its exported fields are for
// reading.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port, with no trailing slash.
	URL string
	// Issuer is the issuer identifier (RFC 8414 §2); equal to URL.
	Issuer string
	// ClientID and ClientSecret are the registered confidential client's
	// credentials. The secret is a fake; still, do not log it.
	ClientID     string
	ClientSecret string

	opts         Options
	clientID     string // private copies: a test changing the fields must not break the helpers
	clientSecret string
	ts           *httptest.Server
	provider     fosite.OAuth2Provider
	strategy     oauth2.CoreStrategy
	store        *store
	closeOnce    sync.Once
	done         chan struct{} // closed by Close; ends held answers

	// fositeMu serialises all fosite processing. fosite's handlers share
	// session objects between requests, and one-at-a-time token requests
	// make a concurrent double spend of a refresh token deterministic.
	fositeMu sync.Mutex

	mcpOnce sync.Once
	mcpC    *mcpCounters

	tokenCalls   atomic.Int64
	refreshCalls atomic.Int64
	refreshForms formLog      // forms.go
	tokenDelay   atomic.Int64 // time.Duration
	deny         atomic.Bool

	faultMu sync.Mutex
	fault   *fault

	// For this package's tests: called when an answer starts being held,
	// and when the hold ends with whether the answer will be sent.
	onHold     atomic.Pointer[func()]
	onHoldDone atomic.Pointer[func(sent bool)]
}

type fault struct {
	left   int
	status int
	header http.Header
	body   string
}

// New starts a server on 127.0.0.1 and stops it when the test ends. It fails
// the test if opts is invalid.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if err := opts.setDefaults(); err != nil {
		t.Fatalf("authztest: invalid Options: %v", err)
		return nil // only reached with a testing.TB whose Fatalf returns
	}

	mux := http.NewServeMux()
	// The listener exists before Start, so the URLs are known while the
	// server is configured and nothing changes once it serves.
	ts := httptest.NewUnstartedServer(mux)
	base := "http://" + ts.Listener.Addr().String()

	s := &Server{
		URL:          base,
		Issuer:       base,
		ClientID:     "authztest-client",
		ClientSecret: "authztest-fake-client-secret",
		opts:         opts,
		ts:           ts,
		store:        newStore(opts.ReuseGrace),
		done:         make(chan struct{}),
	}
	s.clientID, s.clientSecret = s.ClientID, s.ClientSecret
	s.tokenDelay.Store(int64(opts.TokenDelay))

	refreshLifespan := opts.RefreshTokenLifespan
	if refreshLifespan == 0 {
		refreshLifespan = -1 // fosite: never expires
	}
	cfg := &fosite.Config{
		AccessTokenLifespan:      opts.AccessTokenLifespan,
		RefreshTokenLifespan:     refreshLifespan,
		GlobalSecret:             []byte(rand.Text() + rand.Text()), // fosite wants at least 32 bytes
		ScopeStrategy:            fosite.ExactScopeStrategy,
		AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
		EnforcePKCE:              true,
		RefreshTokenScopes:       []string{}, // every grant is refreshable, offline scope or not
		ClientSecretsHasher:      plainHasher{},
		TokenURL:                 base + tokenPath,
	}
	strategy := compose.NewOAuth2HMACStrategy(cfg)
	s.strategy = strategy
	s.provider = compose.Compose(cfg, s.store, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2PKCEFactory, // after the authorize-code handler, as fosite requires
	)

	client := &fosite.DefaultClient{
		ID:            s.clientID,
		Secret:        []byte(s.clientSecret),
		RedirectURIs:  []string{base + callbackPath},
		ResponseTypes: []string{"code"},
		GrantTypes:    []string{"authorization_code", "refresh_token", "client_credentials"},
		Scopes:        opts.Scopes,
	}
	if opts.Resource != "" {
		// Tokens for the resource carry it as their audience, which fosite
		// checks against the client's on every refresh.
		client.Audience = []string{opts.Resource}
	}
	if opts.TokenEndpointAuthMethod == "" {
		s.store.setClient(client)
	} else {
		// fosite enforces a single method only for OpenID Connect clients.
		s.store.setClient(&fosite.DefaultOpenIDConnectClient{
			DefaultClient:           client,
			TokenEndpointAuthMethod: opts.TokenEndpointAuthMethod,
		})
	}

	if opts.DynamicRegistration {
		mux.HandleFunc("POST "+registrationPath, s.handleRegister)
	}
	mux.HandleFunc(authorizePath, s.handleAuthorize)
	mux.HandleFunc(tokenPath, s.handleToken)
	mux.HandleFunc(introspectionPath, s.handleIntrospect)
	mux.HandleFunc(revocationPath, s.handleRevoke)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.handleMetadata)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.handleMetadata)
	mux.HandleFunc("GET "+callbackPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("authztest: callback\n"))
	})

	ts.Start()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server; later requests fail to connect, which is how a
// test models a provider that cannot be reached. Answers being held by
// TokenDelay are dropped. Close is idempotent and runs when the test ends.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ts.Close()
	})
}

// TokenURL is the token endpoint (RFC 6749 §3.2).
func (s *Server) TokenURL() string { return s.URL + tokenPath }

// AuthorizeURL is the authorization endpoint (RFC 6749 §3.1).
func (s *Server) AuthorizeURL() string { return s.URL + authorizePath }

// IntrospectionURL is the introspection endpoint (RFC 7662 §2). It accepts
// client_secret_basic and client_secret_post whatever the token endpoint
// accepts.
func (s *Server) IntrospectionURL() string { return s.URL + introspectionPath }

// RevocationURL is the revocation endpoint (RFC 7009 §2).
func (s *Server) RevocationURL() string { return s.URL + revocationPath }

// RedirectURI is a redirect URI registered for the client. It answers 200.
func (s *Server) RedirectURI() string { return s.URL + callbackPath }

// AddRedirectURI registers one more redirect URI for the client, for example
// the callback of the code under test. For http loopback URIs the port is
// not compared (RFC 8252 §7.3), the path is.
func (s *Server) AddRedirectURI(uri string) {
	s.store.addRedirectURI(s.clientID, uri)
}

// DenyConsent makes the authorization endpoint refuse (deny true) or grant
// (deny false, the default) every request from now on. A refusal redirects
// with error=access_denied (RFC 6749 §4.1.2.1).
func (s *Server) DenyConsent(deny bool) { s.deny.Store(deny) }

// SetTokenDelay changes [Options.TokenDelay] for the answers that start
// being held from now on. Zero (or less) turns the delay off.
func (s *Server) SetTokenDelay(d time.Duration) { s.tokenDelay.Store(int64(max(d, 0))) }

// OnHold calls f each time a token-endpoint answer starts being held back by
// the token delay: the request has been processed (a refresh token used,
// a new pair stored) and its answer is not yet sent. Tests wait on it to act
// while a refresh is in flight. Nil removes f.
func (s *Server) OnHold(f func()) {
	if f == nil {
		s.onHold.Store(nil)
		return
	}
	s.onHold.Store(&f)
}

// FailNext makes the next n token-endpoint requests answer status, header
// and body without being processed: no grant is used, nothing rotates. Then
// normal answers resume. The header is sent as given; without a
// Content-Type, net/http guesses one from the body. n <= 0 cancels a pending
// failure. A status outside 200–599 panics.
//
// Injected answers are counted by TokenCalls and RefreshCalls and are held
// back by TokenDelay like any other.
func (s *Server) FailNext(n int, status int, header http.Header, body string) {
	if status < 200 || status > 599 {
		panic(fmt.Sprintf("authztest: FailNext: status %d is not a final HTTP status (200–599)", status))
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if n <= 0 {
		s.fault = nil
		return
	}
	s.fault = &fault{left: n, status: status, header: header.Clone(), body: body}
}

// takeFault returns the injected answer for this request, if one is pending.
func (s *Server) takeFault() *response {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	f := s.fault
	if f == nil {
		return nil
	}
	if f.left--; f.left == 0 {
		s.fault = nil
	}
	r := newResponse()
	if h := f.header.Clone(); h != nil {
		r.header = h
	}
	r.status = f.status
	r.body.WriteString(f.body)
	return r
}

// TokenCalls counts every request to the token endpoint, whatever the grant
// type or outcome, including those [Server.IssueTokens] makes.
func (s *Server) TokenCalls() int64 { return s.tokenCalls.Load() }

// RefreshCalls counts token-endpoint requests with grant_type=refresh_token,
// whatever their outcome.
func (s *Server) RefreshCalls() int64 { return s.refreshCalls.Load() }

// ReuseDetected counts replays of an already used refresh token that the
// server took as reuse and answered by revoking the grant. Replays inside
// the [Options.ReuseGrace] window are not counted here.
func (s *Server) ReuseDetected() int64 { return s.store.reuseDetected.Load() }

// GraceReuses counts replays of a used refresh token inside the
// [Options.ReuseGrace] window, each of which got a fresh pair.
func (s *Server) GraceReuses() int64 { return s.store.graceReuses.Load() }

// Expire makes token, an access or refresh token this server issued, expired
// as of now, without waiting: introspection reports it inactive and, for a
// refresh token, the token endpoint refuses it with invalid_grant. The other
// tokens of the grant are untouched. It fails the test if the server does
// not know token (or already revoked it).
func (s *Server) Expire(t testing.TB, token string) {
	t.Helper()
	ctx := context.Background()
	s.fositeMu.Lock()
	defer s.fositeMu.Unlock()
	past := time.Now().UTC().Add(-time.Minute)
	if !s.store.expire(s.strategy.AccessTokenSignature(ctx, token), s.strategy.RefreshTokenSignature(ctx, token), past) {
		t.Fatalf("authztest: Expire: the token (length %d) is not an active token of this server", len(token))
	}
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s.fositeMu.Lock()
	defer s.fositeMu.Unlock()

	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	if !s.checkAuthorizeResource(r) {
		s.provider.WriteAuthorizeError(ctx, w, ar, errInvalidTarget)
		return
	}
	if s.opts.Resource != "" {
		ar.GrantAudience(s.opts.Resource)
	}
	if s.deny.Load() {
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrAccessDenied.WithHint("authztest: consent denied by the test."))
		return
	}
	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	resp, err := s.provider.NewAuthorizeResponse(ctx, ar, &fosite.DefaultSession{Subject: Subject, Username: Subject})
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	if s.opts.ResponseIssuer {
		// RFC 9207 §2: the issuer identifies the server that answered.
		resp.AddParameter("iss", s.Issuer)
	}
	s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.tokenCalls.Add(1)
	// Parsed here so that every request is counted by grant type, injected
	// failures included; fosite reuses the parsed form.
	if err := r.ParseForm(); err == nil && r.PostForm.Get("grant_type") == "refresh_token" {
		s.refreshCalls.Add(1)
		s.refreshForms.add(r.PostForm)
	}

	resp := s.takeFault()
	if resp == nil {
		resp = s.checkTokenResource(r)
	}
	if resp == nil {
		resp = s.processToken(r)
	}
	if !s.hold(r.Context()) {
		// The client left, or the server is closing: the answer is lost.
		// Aborting drops the connection; returning would send an empty 200.
		panic(http.ErrAbortHandler)
	}
	resp.writeTo(w)
}

// processToken runs the token request through fosite. The grant is used and
// stored even if the client has gone away meanwhile, as at a real provider.
func (s *Server) processToken(r *http.Request) *response {
	ctx := context.WithoutCancel(r.Context())
	rec := newResponse()
	s.fositeMu.Lock()
	defer s.fositeMu.Unlock()

	ar, err := s.provider.NewAccessRequest(ctx, r, new(fosite.DefaultSession))
	if err != nil {
		s.provider.WriteAccessError(ctx, rec, ar, err)
		return rec
	}
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		// fosite has checked the scopes against the client's; the client
		// consents for itself (RFC 6749 §4.4).
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
	}
	ans, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.provider.WriteAccessError(ctx, rec, ar, err)
		return rec
	}
	s.provider.WriteAccessResponse(ctx, rec, ar, ans)
	return rec
}

// hold waits out the token delay. It reports false if the request's context
// ended or the server closed first.
func (s *Server) hold(ctx context.Context) (sent bool) {
	d := time.Duration(s.tokenDelay.Load())
	if d <= 0 {
		return true
	}
	if h := s.onHold.Load(); h != nil {
		(*h)()
	}
	if h := s.onHoldDone.Load(); h != nil {
		defer func() { (*h)(sent) }()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// fosite authenticates introspection callers only by HTTP Basic (or a
	// bearer token). RFC 7662 §2.1 leaves the method to the server, and
	// clients also send client_secret_post, so that is translated to Basic.
	if r.Method == http.MethodPost && r.Header.Get("Authorization") == "" {
		if err := r.ParseForm(); err == nil {
			id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
			if id != "" && secret != "" {
				r = r.Clone(ctx)
				r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
			}
		}
	}
	s.fositeMu.Lock()
	defer s.fositeMu.Unlock()
	ir, err := s.provider.NewIntrospectionRequest(ctx, r, new(fosite.DefaultSession))
	if err != nil {
		s.provider.WriteIntrospectionError(ctx, w, err)
		return
	}
	s.provider.WriteIntrospectionResponse(ctx, w, ir)
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s.fositeMu.Lock()
	defer s.fositeMu.Unlock()
	err := s.provider.NewRevocationRequest(ctx, r)
	s.provider.WriteRevocationResponse(ctx, w, err)
}

// metadata is the authorization server metadata document (RFC 8414 §2).
type metadata struct {
	Issuer                                     string   `json:"issuer"`
	AuthorizationEndpoint                      string   `json:"authorization_endpoint"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	ScopesSupported                            []string `json:"scopes_supported"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	AuthorizationResponseIssParameterSupported bool     `json:"authorization_response_iss_parameter_supported,omitempty"`
	RegistrationEndpoint                       string   `json:"registration_endpoint,omitempty"`
}

// handleMetadata serves RFC 8414 metadata. The OpenID Connect discovery path
// gets the same document: the server issues no ID tokens, and what callers
// discover there is the endpoints.
func (s *Server) handleMetadata(w http.ResponseWriter, _ *http.Request) {
	methods := []string{AuthMethodBasic, AuthMethodPost}
	if m := s.opts.TokenEndpointAuthMethod; m != "" {
		methods = []string{m}
	}
	md := metadata{
		Issuer:                                     s.Issuer,
		AuthorizationEndpoint:                      s.AuthorizeURL(),
		TokenEndpoint:                              s.TokenURL(),
		IntrospectionEndpoint:                      s.IntrospectionURL(),
		RevocationEndpoint:                         s.RevocationURL(),
		ScopesSupported:                            s.opts.Scopes,
		ResponseTypesSupported:                     []string{"code"},
		GrantTypesSupported:                        []string{"authorization_code", "refresh_token", "client_credentials"},
		CodeChallengeMethodsSupported:              []string{"S256"},
		TokenEndpointAuthMethodsSupported:          methods,
		IntrospectionEndpointAuthMethodsSupported:  []string{AuthMethodBasic, AuthMethodPost},
		RevocationEndpointAuthMethodsSupported:     methods,
		AuthorizationResponseIssParameterSupported: s.opts.ResponseIssuer,
	}
	if s.opts.DynamicRegistration {
		md.RegistrationEndpoint = s.RegistrationURL()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(md)
}

// response is a token-endpoint answer, buffered so that it can be held back.
type response struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func newResponse() *response { return &response{status: http.StatusOK, header: http.Header{}} }

func (r *response) Header() http.Header         { return r.header }
func (r *response) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *response) WriteHeader(status int)      { r.status = status }

func (r *response) writeTo(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}

// plainHasher compares client secrets as they are. fosite's default bcrypt
// would cost a quarter second per client authentication; the secret here is
// a fake.
type plainHasher struct{}

var _ fosite.Hasher = plainHasher{}

func (plainHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	return bytes.Clone(data), nil
}

func (plainHasher) Compare(_ context.Context, hash, data []byte) error {
	if subtle.ConstantTimeCompare(hash, data) != 1 {
		return errors.New("authztest: client secret mismatch")
	}
	return nil
}
