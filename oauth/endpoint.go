package oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultHTTPTimeout bounds each request of an [Endpoint] whose Config has no
// HTTPClient. [http.DefaultClient] has no timeout at all, and a token
// endpoint that never answers would hold a refresh (and the lease on its
// connection) forever.
const DefaultHTTPTimeout = 30 * time.Second

// maxResponseBody is the most of a response body an endpoint reads. Token,
// introspection and metadata documents are a few KiB; anything beyond a MiB
// is not one of them.
const maxResponseBody = 1 << 20

// Config describes one OAuth client of one authorization server. Zero fields
// take the documented defaults.
type Config struct {
	// ClientID identifies the client (RFC 6749 §2.2). Required.
	ClientID string
	// ClientSecret authenticates a confidential client. Empty for a public
	// client, which then identifies itself with client_id in the form.
	ClientSecret string

	// TokenURL is the token endpoint (RFC 6749 §3.2). When empty it is
	// discovered from Issuer.
	TokenURL string
	// Issuer is the authorization server's issuer identifier. Endpoint URLs
	// that are not given explicitly are discovered from it (RFC 8414, then
	// OpenID Connect Discovery) on first use.
	Issuer string
	// AuthorizeURL, IntrospectionURL and RevocationURL are the authorization
	// (RFC 6749 §3.1), introspection (RFC 7662) and revocation (RFC 7009)
	// endpoints; each is discovered from Issuer when empty.
	AuthorizeURL, IntrospectionURL, RevocationURL string

	// AuthStyle is how the client authenticates; the zero value is
	// [AuthStyleAuto].
	AuthStyle AuthStyle
	// DefaultExpiresIn is the access-token lifetime assumed when a token
	// response carries no expires_in. Zero leaves such tokens' expiry unknown.
	DefaultExpiresIn time.Duration
	// Retry governs retries of transient failures.
	Retry Backoff
	// TokenParams are added to every grant this Endpoint posts to the
	// token endpoint (authorization code, refresh, client credentials).
	// An MCP client sets "resource" here (RFC 8707 §2.2): the token must
	// stay bound to the MCP server on the code exchange and on every
	// refresh, and a refresh that drops it may get a token for any
	// audience. Parameters of the grant itself and client credentials may
	// not be set here. See docs/mcp.md.
	TokenParams url.Values

	// HTTPClient sends the requests. Default: a client with a
	// [DefaultHTTPTimeout] timeout.
	HTTPClient *http.Client
	// Now is the clock for token expiry and Retry-After dates. Default
	// [time.Now].
	Now func() time.Time
	// Rand draws backoff jitter from [0, 1). Default [rand.Float64] from
	// math/rand/v2.
	Rand func() float64
	// Sleep waits between retries and returns early with an error when ctx
	// is done. Default: a timer that honours ctx. Tests inject one that
	// records the delays.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives debug records about retries and auth-style fallbacks,
	// never token values. Default: discard.
	Logger *slog.Logger

	// AuthStyles remembers the auth style that worked in AuthStyleAuto mode.
	// Share one between Endpoints of the same provider; default: a private
	// cache.
	AuthStyles *AuthStyleCache
	// Discovery caches authorization server metadata. Share one between
	// Endpoints; default: a private cache with [DefaultDiscoveryTTL].
	Discovery *DiscoveryCache
}

// Endpoint talks to one authorization server on behalf of one client: the
// token endpoint's grants, authorization URLs, introspection and revocation.
// It holds no tokens. An Endpoint is safe for concurrent use.
type Endpoint struct {
	cfg       Config
	client    *http.Client
	retry     Backoff
	styles    *AuthStyleCache
	discovery *DiscoveryCache
	now       func() time.Time
	rand      func() float64
	sleep     func(context.Context, time.Duration) error
	log       *slog.Logger
}

// NewEndpoint checks cfg and returns an Endpoint for it. It makes no
// request: endpoints left to discovery are looked up on first use.
func NewEndpoint(cfg Config) (*Endpoint, error) {
	if strings.TrimSpace(cfg.ClientID) == "" {
		return nil, errors.New("oauth: config: ClientID is empty")
	}
	if cfg.TokenURL == "" && cfg.Issuer == "" {
		return nil, errors.New("oauth: config: neither TokenURL nor Issuer is set")
	}
	for _, f := range []struct{ name, value string }{
		{"TokenURL", cfg.TokenURL},
		{"AuthorizeURL", cfg.AuthorizeURL},
		{"IntrospectionURL", cfg.IntrospectionURL},
		{"RevocationURL", cfg.RevocationURL},
	} {
		if f.value == "" {
			continue
		}
		if err := checkHTTPURL(f.value); err != nil {
			return nil, fmt.Errorf("oauth: config: %s: %w", f.name, err)
		}
	}
	if cfg.Issuer != "" {
		if err := checkIssuer(cfg.Issuer); err != nil {
			return nil, fmt.Errorf("oauth: config: Issuer: %w", err)
		}
	}
	if !cfg.AuthStyle.valid() {
		return nil, fmt.Errorf("oauth: config: AuthStyle %d is not a known style", int(cfg.AuthStyle))
	}
	if cfg.DefaultExpiresIn < 0 {
		return nil, fmt.Errorf("oauth: config: DefaultExpiresIn %v is negative", cfg.DefaultExpiresIn)
	}
	if err := cfg.Retry.validate(); err != nil {
		return nil, err
	}
	for k := range cfg.TokenParams {
		if slices.Contains(reservedTokenParams, k) {
			return nil, fmt.Errorf("oauth: config: TokenParams may not set %q", k)
		}
	}

	e := &Endpoint{
		cfg:       cfg,
		client:    cfg.HTTPClient,
		retry:     cfg.Retry.withDefaults(),
		styles:    cfg.AuthStyles,
		discovery: cfg.Discovery,
		now:       cfg.Now,
		rand:      cfg.Rand,
		sleep:     cfg.Sleep,
		log:       cfg.Logger,
	}
	if e.client == nil {
		e.client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.rand == nil {
		e.rand = rand.Float64
	}
	if e.sleep == nil {
		e.sleep = sleep
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.styles == nil {
		e.styles = &AuthStyleCache{}
	}
	if e.discovery == nil {
		e.discovery = NewDiscoveryCache(DefaultDiscoveryTTL)
		e.discovery.Now = e.now
	}
	return e, nil
}

// checkHTTPURL accepts absolute http and https URLs with a host.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// Refresh exchanges refreshToken for a new token (RFC 6749 §6).
//
// When the provider sends no refresh_token back, the returned Token keeps
// refreshToken (as golang.org/x/oauth2 does): RFC 6749 §6 lets the server
// keep the old one valid, and wiping it would force a re-login. Refresh
// expiry fields are only what this response said; carrying forward a
// previously known refresh expiry is the caller's business.
//
// An empty refreshToken fails at once with an [*Error] of Code
// [CodeNoRefreshToken] and [KindTerminal], without calling the provider.
// Failures are [*Error]s: errors.Is(err, [ErrReauthRequired]) for a dead
// grant or client, errors.Is(err, [ErrTransient]) for the rest.
func (e *Endpoint) Refresh(ctx context.Context, refreshToken string) (*Token, error) {
	return e.RefreshWithParams(ctx, refreshToken, nil)
}

func (e *Endpoint) refresh(ctx context.Context, refreshToken string, params url.Values) (*Token, error) {
	const op = "refresh"
	if refreshToken == "" {
		return nil, &Error{Op: op, Code: CodeNoRefreshToken, Kind: KindTerminal,
			Description: "no refresh token to refresh with"}
	}
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
	}
	addParams(form, params)
	tok, err := e.tokenRequest(ctx, op, form)
	if err != nil {
		return nil, err
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken
	}
	return tok, nil
}

// ClientCredentials obtains a token for the client itself (RFC 6749 §4.4),
// asking for scopes when any are given.
func (e *Endpoint) ClientCredentials(ctx context.Context, scopes ...string) (*Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	return e.tokenRequest(ctx, "client_credentials", form)
}

// Exchange redeems an authorization code (RFC 6749 §4.1.3). redirectURI must
// be the one sent in the authorization request, if one was; codeVerifier is
// the PKCE verifier whose challenge was sent there (RFC 7636 §4.5).
//
// A transient failure is retried like any other token request. A code is
// single use, so a retry after an answer that was lost in transit earns
// invalid_grant; that costs nothing the lost answer had not already cost.
func (e *Endpoint) Exchange(ctx context.Context, code, redirectURI, codeVerifier string) (*Token, error) {
	if code == "" {
		return nil, errors.New("oauth: exchange: authorization code is empty")
	}
	form := url.Values{
		"grant_type": {"authorization_code"},
		"code":       {code},
	}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	if codeVerifier != "" {
		form.Set("code_verifier", codeVerifier)
	}
	return e.tokenRequest(ctx, "exchange", form)
}

// authCodeReserved are the authorization request parameters AuthCodeURL sets
// itself; extra may not override them.
var authCodeReserved = []string{
	"response_type", "client_id", "redirect_uri", "scope", "state",
	"code_challenge", "code_challenge_method",
}

// AuthCodeURL returns the URL of the authorization request (RFC 6749 §4.1.1)
// with PKCE (RFC 7636 §4.3, method S256). state (see [NewState]) and
// codeChallenge (see [NewPKCE]) are required; redirectURI and scopes are
// sent when given. extra adds provider parameters such as access_type or
// prompt, and may not override the ones above.
//
// The context is used only when the authorization endpoint must be
// discovered.
func (e *Endpoint) AuthCodeURL(ctx context.Context, state, redirectURI, codeChallenge string, scopes []string, extra url.Values) (string, error) {
	if state == "" {
		return "", errors.New("oauth: authorize: state is empty")
	}
	if codeChallenge == "" {
		return "", errors.New("oauth: authorize: PKCE code challenge is empty")
	}
	for _, k := range authCodeReserved {
		if _, ok := extra[k]; ok {
			return "", fmt.Errorf("oauth: authorize: extra parameter %q would override one AuthCodeURL sets", k)
		}
	}
	authURL, err := e.resolve(ctx, e.cfg.AuthorizeURL, func(m *Metadata) string { return m.AuthorizationEndpoint })
	if err != nil {
		return "", err
	}
	if authURL == "" {
		return "", errors.New("oauth: authorize: no authorization endpoint configured or discovered")
	}
	u, err := url.Parse(authURL)
	if err != nil {
		return "", fmt.Errorf("oauth: authorize: authorization endpoint %q: %w", authURL, err)
	}
	// The endpoint URL may carry its own query (RFC 6749 §3.1 says keep it).
	q := u.Query()
	for k, vs := range extra {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	q.Set("response_type", "code")
	q.Set("client_id", e.cfg.ClientID)
	if redirectURI != "" {
		q.Set("redirect_uri", redirectURI)
	}
	if len(scopes) > 0 {
		q.Set("scope", strings.Join(scopes, " "))
	}
	q.Set("state", state)
	q.Set("code_challenge", codeChallenge)
	q.Set("code_challenge_method", "S256")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// tokenRequest posts a grant to the token endpoint and parses the answer.
func (e *Endpoint) tokenRequest(ctx context.Context, op string, form url.Values) (*Token, error) {
	for k, vs := range e.cfg.TokenParams {
		form[k] = append([]string(nil), vs...)
	}
	tokenURL, err := e.resolve(ctx, e.cfg.TokenURL, func(m *Metadata) string { return m.TokenEndpoint })
	if err != nil {
		return nil, err
	}
	if tokenURL == "" {
		return nil, fmt.Errorf("oauth: %s: issuer %q publishes no token_endpoint", op, e.cfg.Issuer)
	}
	var tok *Token
	err = e.call(ctx, op, tokenURL, form, func(status int, header http.Header, body []byte) error {
		t, err := ParseTokenResponse(status, header, body, ParseOptions{
			Op:               op,
			Now:              e.now(),
			DefaultExpiresIn: e.cfg.DefaultExpiresIn,
		})
		if err != nil {
			return err
		}
		tok = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// resolve returns explicit if set, else the URL pick finds in the issuer's
// metadata, else "" (no issuer, or the issuer publishes none).
func (e *Endpoint) resolve(ctx context.Context, explicit string, pick func(*Metadata) string) (string, error) {
	if explicit != "" || e.cfg.Issuer == "" {
		return explicit, nil
	}
	md, err := e.discovery.Get(ctx, e.client, e.cfg.Issuer)
	if err != nil {
		return "", err
	}
	return pick(md), nil
}

// responseHandler turns one HTTP answer into the caller's result, or into an
// [*Error].
type responseHandler func(status int, header http.Header, body []byte) error

// call posts form, with client authentication, to endpointURL, retrying
// transient failures, and hands each answer to handle.
//
// In [AuthStyleAuto] it tries the Basic header first and, when the provider
// refuses the client for it, the form fields once; the style that succeeded
// (and only one that succeeded) is remembered per URL and client ID, and
// used directly from then on. If both are refused, the second refusal is
// returned. Each style gets its own retry budget, so one call makes at most
// 2·MaxAttempts requests. A public client (no secret) has nothing to put in
// a Basic header and always sends client_id in the form (RFC 6749 §3.2.1).
func (e *Endpoint) call(ctx context.Context, op, endpointURL string, form url.Values, handle responseHandler) error {
	style := e.cfg.AuthStyle
	if style != AuthStyleAuto {
		return e.attempts(ctx, op, endpointURL, form, style, handle)
	}
	if e.cfg.ClientSecret == "" {
		return e.attempts(ctx, op, endpointURL, form, AuthStyleParams, handle)
	}
	if known, ok := e.styles.lookup(endpointURL, e.cfg.ClientID); ok {
		return e.attempts(ctx, op, endpointURL, form, known, handle)
	}
	err := e.attempts(ctx, op, endpointURL, form, AuthStyleHeader, handle)
	if err == nil {
		e.styles.remember(endpointURL, e.cfg.ClientID, AuthStyleHeader)
		return nil
	}
	if !clientRefused(err) {
		return err
	}
	e.log.DebugContext(ctx, "oauth: provider refused client_secret_basic; trying client_secret_post",
		"op", op, "url", endpointURL)
	err = e.attempts(ctx, op, endpointURL, form, AuthStyleParams, handle)
	if err == nil {
		e.styles.remember(endpointURL, e.cfg.ClientID, AuthStyleParams)
	}
	return err
}

// clientRefused reports whether err is the answer of a provider that did not
// accept the client's credentials in the form they were sent: 401 (RFC 6749
// §5.2 invalid_client), or 400 with a code that some providers use for a
// missing or misplaced credential.
func clientRefused(err error) bool {
	var oe *Error
	if !errors.As(err, &oe) {
		return false
	}
	switch oe.StatusCode {
	case http.StatusUnauthorized:
		return true
	case http.StatusBadRequest:
		switch oe.Code {
		case "invalid_client", "unauthorized_client", "invalid_request":
			return true
		}
	}
	return false
}

// attempts sends the request in one auth style, with retries.
func (e *Endpoint) attempts(ctx context.Context, op, endpointURL string, form url.Values, style AuthStyle, handle responseHandler) error {
	return e.withRetry(ctx, op, func(ctx context.Context) error {
		status, header, body, err := e.post(ctx, op, endpointURL, form, style)
		if err != nil {
			return err
		}
		err = handle(status, header, body)
		var oe *Error
		if (status == http.StatusBadGateway || status == http.StatusGatewayTimeout) && errors.As(err, &oe) {
			// A gateway's answer: the server behind it may have handled the
			// request before the gateway gave up on it.
			oe.OutcomeUnknown = true
		}
		return err
	})
}

// post sends one authenticated form POST and reads the answer. It fails only
// when no usable answer arrived; an HTTP error status is for the handler.
func (e *Endpoint) post(ctx context.Context, op, endpointURL string, form url.Values, style AuthStyle) (int, http.Header, []byte, error) {
	v := make(url.Values, len(form)+2)
	for k, vs := range form {
		v[k] = vs
	}
	if style == AuthStyleParams {
		v.Set("client_id", e.cfg.ClientID)
		if e.cfg.ClientSecret != "" {
			v.Set("client_secret", e.cfg.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpointURL, strings.NewReader(v.Encode()))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("oauth: %s: building request: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if style == AuthStyleHeader {
		// RFC 6749 §2.3.1: the client id and secret are form-urlencoded
		// before they are joined for Basic authentication. Most providers
		// only use characters the encoding leaves alone, which is why
		// skipping it goes unnoticed until a secret contains a '+' or ':'.
		req.SetBasicAuth(url.QueryEscape(e.cfg.ClientID), url.QueryEscape(e.cfg.ClientSecret))
	}
	return doRequest(e.client, op, req)
}

// doRequest sends req and reads a bounded answer, closing the body. It fails
// only when no usable answer arrived; then the error's OutcomeUnknown says
// whether the request had been written, and so may have taken effect.
func doRequest(client *http.Client, op string, req *http.Request) (int, http.Header, []byte, error) {
	var wrote atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) },
	}))
	resp, err := client.Do(req)
	if err != nil {
		ne := NetworkError(op, err)
		ne.OutcomeUnknown = wrote.Load()
		return 0, nil, nil, ne
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		ne := NetworkError(op, fmt.Errorf("reading response: %w", err))
		ne.OutcomeUnknown = true
		return 0, nil, nil, ne
	}
	if len(body) > maxResponseBody {
		if resp.StatusCode/100 == 2 {
			return 0, nil, nil, &Error{Op: op, StatusCode: resp.StatusCode, Code: CodeInvalidResponse,
				Kind: KindTransient, Description: "response body exceeds 1 MiB"}
		}
		// An error page's body only refines the status; its head will do.
		body = body[:maxResponseBody]
	}
	return resp.StatusCode, resp.Header, body, nil
}
