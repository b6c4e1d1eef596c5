package demo

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults of [Options].
const (
	DefaultAccessTTL = 2 * time.Minute
	ClientID         = "tokenbroker-demo"
)

// Options configure a [Sandbox].
type Options struct {
	// BaseURL is where the sandbox is mounted, without a trailing slash:
	// "http://127.0.0.1:8080/demo".
	BaseURL string
	// ClientSecret is the secret tokenbroker authenticates with.
	ClientSecret string
	// AccessTTL is the lifetime of access tokens. Default 2 minutes: short,
	// so refreshes happen while you watch.
	AccessTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Sandbox is the authorization server and API. Its state lives in memory
// and is lost on restart, like any sandbox's.
type Sandbox struct {
	opts Options
	mu   sync.Mutex
	// consents are authorization requests waiting for the person's answer.
	consents map[string]authRequest
	codes    map[string]codeGrant
	grants   map[string]*grant
	// refresh maps the current refresh token of each grant to the grant;
	// a rotated-out token is in spent instead.
	refresh map[string]string
	spent   map[string]string
	access  map[string]accessToken
}

type authRequest struct {
	redirectURI, state, challenge, scope string
	expires                              time.Time
}

type codeGrant struct {
	authRequest
	user    string
	expires time.Time
}

type grant struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Scope   string    `json:"scope"`
	Created time.Time `json:"created_at"`
	Revoked bool      `json:"revoked"`
	// Refreshes counts refresh-token rotations.
	Refreshes int `json:"refreshes"`
}

type accessToken struct {
	grant   string
	expires time.Time
}

// New returns a sandbox.
func New(opts Options) *Sandbox {
	if opts.AccessTTL <= 0 {
		opts.AccessTTL = DefaultAccessTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.BaseURL = strings.TrimRight(opts.BaseURL, "/")
	return &Sandbox{
		opts:     opts,
		consents: map[string]authRequest{},
		codes:    map[string]codeGrant{},
		grants:   map[string]*grant{},
		refresh:  map[string]string{},
		spent:    map[string]string{},
		access:   map[string]accessToken{},
	}
}

// Endpoints of the sandbox, relative to BaseURL.
const (
	AuthorizePath  = "/oauth/authorize"
	TokenPath      = "/oauth/token"
	RevocationPath = "/oauth/revoke"
	APIPath        = "/api"
	GrantsPath     = "/grants"
)

// Handler serves the sandbox under prefix (the path of BaseURL, "/demo").
// It answers loopback clients only.
func (s *Sandbox) Handler(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/{$}", s.index)
	mux.HandleFunc("GET "+prefix+AuthorizePath, s.authorize)
	mux.HandleFunc("POST "+prefix+AuthorizePath, s.consent)
	mux.HandleFunc("POST "+prefix+TokenPath, s.token)
	mux.HandleFunc("POST "+prefix+RevocationPath, s.revoke)
	mux.HandleFunc("GET "+prefix+GrantsPath, s.listGrants)
	mux.HandleFunc("POST "+prefix+GrantsPath+"/revoke", s.revokeGrants)
	mux.HandleFunc(prefix+APIPath+"/", s.api)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			http.Error(w, "the tokenbroker demo sandbox answers loopback clients only", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Tokenbroker-Demo", "sandbox: not a real provider")
		mux.ServeHTTP(w, r)
	})
}

func randomToken(prefix string) string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// oauthError writes an RFC 6749 §5.2 error.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="tokenbroker-demo"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · tokenbroker demo sandbox</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem}
.banner{background:#fde68a;border:2px solid #b45309;padding:.5rem 1rem;font-weight:600}
button{font:inherit;padding:.4rem 1.2rem;margin-right:.5rem}table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}</style></head>
<body><p class="banner">tokenbroker demo sandbox: a pretend provider built into tokenbroker for trying it out. Not a real account, not for production.</p>
<h1>{{.Title}}</h1>{{.Body}}</body></html>`))

func render(w http.ResponseWriter, status int, title string, body template.HTML) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	w.WriteHeader(status)
	_ = page.Execute(w, struct {
		Title string
		Body  template.HTML
	}{title, body})
}

func (s *Sandbox) index(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var rows strings.Builder
	for _, g := range s.sortedGrants() {
		state := "active"
		if g.Revoked {
			state = "revoked"
		}
		fmt.Fprintf(&rows, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%d</td></tr>",
			template.HTMLEscapeString(g.ID), template.HTMLEscapeString(g.User), state, g.Refreshes)
	}
	s.mu.Unlock()
	body := template.HTML(`<p>This sandbox issues access tokens that live ` + s.opts.AccessTTL.String() + ` and refresh tokens that rotate on every use.</p>
<table><tr><th>grant</th><th>user</th><th>state</th><th>refreshes</th></tr>` + rows.String() + `</table>
<form method="post" action="` + template.HTMLEscapeString(s.path(GrantsPath+"/revoke")) + `"><p><button>Revoke every grant</button> (connections turn needs_reauth at their next refresh)</p></form>`)
	render(w, http.StatusOK, "Sandbox grants", body)
}

func (s *Sandbox) path(p string) string {
	u, err := url.Parse(s.opts.BaseURL)
	if err != nil {
		return p
	}
	return u.Path + p
}

// authorize shows the consent page (RFC 6749 §4.1.1). Errors about the
// client or redirect URI are shown, never redirected (§4.1.2.1).
func (s *Sandbox) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	switch {
	case q.Get("client_id") != ClientID:
		render(w, http.StatusBadRequest, "Unknown application", "<p>client_id is not the demo client.</p>")
		return
	case !loopbackURL(redirect):
		render(w, http.StatusBadRequest, "Bad redirect", "<p>redirect_uri must be an http URL on a loopback address.</p>")
		return
	}
	fail := func(code, desc string) {
		u, _ := url.Parse(redirect)
		v := u.Query()
		v.Set("error", code)
		v.Set("error_description", desc)
		if st := q.Get("state"); st != "" {
			v.Set("state", st)
		}
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	switch {
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "only code is supported")
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		fail("invalid_request", "PKCE with S256 is required")
		return
	}
	id := randomToken("consent_")
	req := authRequest{redirectURI: redirect, state: q.Get("state"), challenge: q.Get("code_challenge"), scope: q.Get("scope"), expires: s.opts.Now().Add(10 * time.Minute)}
	s.mu.Lock()
	s.consents[id] = req
	s.mu.Unlock()
	scope := req.scope
	if scope == "" {
		scope = "(none)"
	}
	body := template.HTML(`<p><b>tokenbroker (demo)</b> asks to act on your behalf in the sandbox API with the scopes <code>` +
		template.HTMLEscapeString(scope) + `</code>.</p>
<form method="post"><input type="hidden" name="consent" value="` + id + `">
<p><label>Sign in as <input name="user" value="alice" pattern="[A-Za-z0-9._-]{1,40}" required></label></p>
<p><button name="decision" value="allow">Allow</button><button name="decision" value="deny">Deny</button></p></form>`)
	render(w, http.StatusOK, "Allow access?", body)
}

func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Fragment != "" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// consent takes the person's answer and sends the browser back with a
// code (§4.1.2) or access_denied (§4.1.2.1).
func (s *Sandbox) consent(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		render(w, http.StatusBadRequest, "Bad form", "")
		return
	}
	s.mu.Lock()
	req, ok := s.consents[r.PostForm.Get("consent")]
	delete(s.consents, r.PostForm.Get("consent"))
	s.mu.Unlock()
	if !ok || s.opts.Now().After(req.expires) {
		render(w, http.StatusBadRequest, "Request expired", "<p>Start again from the connect link.</p>")
		return
	}
	u, _ := url.Parse(req.redirectURI)
	v := u.Query()
	if req.state != "" {
		v.Set("state", req.state)
	}
	user := r.PostForm.Get("user")
	if r.PostForm.Get("decision") != "allow" {
		v.Set("error", "access_denied")
		v.Set("error_description", "the user denied access")
	} else if user == "" || len(user) > 40 || strings.Trim(user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		render(w, http.StatusBadRequest, "Bad user name", "<p>Use letters, digits, '.', '_' or '-'.</p>")
		return
	} else {
		code := randomToken("code_")
		s.mu.Lock()
		s.codes[code] = codeGrant{authRequest: req, user: user, expires: s.opts.Now().Add(time.Minute)}
		s.mu.Unlock()
		v.Set("code", code)
	}
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// clientOK checks client authentication (§2.3.1): HTTP Basic or the
// client_secret_post parameters.
func (s *Sandbox) clientOK(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id == ClientID && subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) == 1
}

func (s *Sandbox) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	if !s.clientOK(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var g *grant
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		code := r.PostForm.Get("code")
		c, ok := s.codes[code]
		delete(s.codes, code) // single use (§4.1.2)
		if !ok || now.After(c.expires) {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code is unknown, used or expired")
			return
		}
		if r.PostForm.Get("redirect_uri") != c.redirectURI {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
			return
		}
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		}
		g = &grant{ID: randomToken("grant_")[:16], User: c.user, Scope: c.scope, Created: now}
		s.grants[g.ID] = g
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		id, ok := s.refresh[rt]
		if !ok {
			if gid, reused := s.spent[rt]; reused {
				// A rotated-out token used again: a sign it leaked, so the
				// whole grant goes, as strict providers do.
				s.revokeGrant(gid)
			}
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token is unknown, spent or revoked")
			return
		}
		g = s.grants[id]
		if g.Revoked {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the grant was revoked")
			return
		}
		delete(s.refresh, rt)
		s.spent[rt] = id
		g.Refreshes++
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "authorization_code and refresh_token only")
		return
	}
	at, rt := randomToken("demo_at_"), randomToken("demo_rt_")
	s.access[at] = accessToken{grant: g.ID, expires: now.Add(s.opts.AccessTTL)}
	s.refresh[rt] = g.ID
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": at, "token_type": "Bearer", "expires_in": int(s.opts.AccessTTL.Seconds()),
		"refresh_token": rt, "scope": g.Scope,
	})
}

// revokeGrant ends a grant and every token of it. Callers hold s.mu.
func (s *Sandbox) revokeGrant(id string) {
	g, ok := s.grants[id]
	if !ok {
		return
	}
	g.Revoked = true
	for t, gid := range s.refresh {
		if gid == id {
			delete(s.refresh, t)
		}
	}
	for t, a := range s.access {
		if a.grant == id {
			delete(s.access, t)
		}
	}
}

// revoke is RFC 7009: revoking either token of a grant revokes the grant;
// unknown tokens are answered 200 too (§2.2).
func (s *Sandbox) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	if !s.clientOK(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	tok := r.PostForm.Get("token")
	s.mu.Lock()
	if id, ok := s.refresh[tok]; ok {
		s.revokeGrant(id)
	} else if a, ok := s.access[tok]; ok {
		s.revokeGrant(a.grant)
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *Sandbox) sortedGrants() []*grant {
	out := make([]*grant, 0, len(s.grants))
	for _, g := range s.grants {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *grant) int { return a.Created.Compare(b.Created) })
	return out
}

// listGrants answers the sandbox's grants as JSON (no tokens).
func (s *Sandbox) listGrants(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	gs := s.sortedGrants()
	out := make([]grant, 0, len(gs))
	for _, g := range gs {
		out = append(out, *g)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"grants": out})
}

// revokeGrants revokes every grant, or those of ?user=, as a person would
// by removing the app from their account at a real provider. The
// connections holding them turn needs_reauth at their next refresh.
func (s *Sandbox) revokeGrants(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	s.mu.Lock()
	n := 0
	for id, g := range s.grants {
		if !g.Revoked && (user == "" || g.User == user) {
			s.revokeGrant(id)
			n++
		}
	}
	s.mu.Unlock()
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		http.Redirect(w, r, s.path("/"), http.StatusSeeOther)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]int{"revoked": n})
}

// api is the sandbox's protected resource: /api/me says who the token
// belongs to; other paths echo what they were asked.
func (s *Sandbox) api(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	s.mu.Lock()
	a, known := s.access[tok]
	var g grant
	if known {
		g = *s.grants[a.grant]
	}
	s.mu.Unlock()
	if !ok || !known || s.opts.Now().After(a.expires) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tokenbroker-demo", error="invalid_token"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_token"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	rest := strings.TrimPrefix(r.URL.Path, s.path(APIPath))
	if rest == "/me" {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"user": g.User, "grant": g.ID, "scope": g.Scope, "token_expires_at": a.expires.UTC().Format(time.RFC3339),
			"sandbox": "tokenbroker demo: not a real provider",
		})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": rest, "user": g.User})
}
