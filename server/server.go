package server

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// Broker is what the server needs from the service core. [*broker.Broker]
// satisfies it.
type Broker interface {
	CreateConnection(ctx context.Context, in broker.Import) (store.Connection, error)
	// CreateConnections stores a batch of imports, all or none.
	CreateConnections(ctx context.Context, ins []broker.Import) error
	GetConnection(ctx context.Context, id string) (store.Connection, error)
	ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error)
	GetToken(ctx context.Context, id string) (broker.Token, error)
	RefreshConnection(ctx context.Context, id string, stale *string) (broker.Token, error)
	DeleteConnection(ctx context.Context, id string) (revokeErr, err error)
	ReimportConnection(ctx context.Context, in broker.Import) (c store.Connection, created bool, err error)
	// Provider tells the delete route whether the provider has a
	// revocation endpoint, so "revoked" is only reported when it did revoke.
	Provider(name string) (broker.Provider, bool)
}

var _ Broker = (*broker.Broker)(nil)

// KeyStore looks API keys up by the SHA-256 of their secret. Every
// [store.Store] satisfies it. GetAPIKeyByHash returns [store.ErrNotFound]
// for unknown and revoked keys.
type KeyStore interface {
	GetAPIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error)
}

// ProxyTarget is where the proxy sends one provider's API calls.
type ProxyTarget struct {
	// BaseURL is the provider's api_base_url; proxied paths are joined under
	// its path, never above it.
	BaseURL *url.URL
	// RefreshOn lists the statuses after which the token is refreshed and
	// the call replayed once; nil means {401}.
	RefreshOn []int
	// AllowResponseHeaders are provider response headers passed to the
	// caller although the proxy drops them by default (Set-Cookie, CORS;
	// see proxy_filter.go), canonical or not.
	AllowResponseHeaders []string

	allow map[string]bool // AllowResponseHeaders, canonical
	// rp proxies every call to this provider (proxy.go).
	rp *httputil.ReverseProxy
	// RefreshOnInvalidToken also takes an answer whose challenge says
	// error="invalid_token" for a stale token (provider
	// refresh_on_invalid_token; RFC 6750 §3.1); a Refresh-On request
	// header still takes precedence.
	RefreshOnInvalidToken bool
}

// Options configures a [Server]. Broker and Keys are required; zero values
// of the others take the documented defaults.
type Options struct {
	Broker Broker
	Keys   KeyStore
	// Targets maps provider names to their API, for the proxy. A provider
	// without an entry cannot be proxied to.
	Targets map[string]ProxyTarget
	// ProxyTransport sends proxied requests to the providers. Default: a
	// clone of [http.DefaultTransport].
	ProxyTransport http.RoundTripper
	// MCPTransport sends proxied calls to MCP servers, whose URLs came from
	// users: it should enforce the mcp host policy
	// (mcpauth.NewHTTPClient). Default: a transport that refuses private
	// and loopback addresses.
	MCPTransport http.RoundTripper
	// MaxReplayBody is the largest proxied request body kept in memory so
	// the request can be replayed after a refresh; larger bodies stream
	// through once and are not retried. Default 1 MiB.
	MaxReplayBody int64
	// MaxBodyBytes bounds JSON request bodies of the API. Default 1 MiB.
	MaxBodyBytes int64
	// KeyCacheTTL is how long a successful API-key lookup is remembered. A
	// revoked key keeps working for at most this long. Default 10s;
	// negative disables the cache.
	KeyCacheTTL time.Duration
	// Ready reports whether the server can serve (for example a store
	// ping), for /readyz. Nil means always ready.
	Ready func(ctx context.Context) error
	// Metrics observes every answer; nil discards.
	Metrics Metrics
	// MetricsHandler serves GET /metrics (admin keys only), for example
	// metrics.Handler of the app's registry. Nil: /metrics answers 404.
	MetricsHandler http.Handler
	// Logger receives one line per request and the details of internal
	// errors; never tokens, keys, headers or bodies. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default [time.Now].
	Now func() time.Time
	// UI, if set, serves the dashboard under /ui/ (package server/ui). It
	// authenticates by its own session cookie, not by API key. Nil: /ui/
	// answers 404.
	UI http.Handler
	// Audit receives an entry for every token hand-out, proxied call,
	// refresh, import, delete and connect (audit.go); it must not block.
	// Nil records nothing.
	Audit Auditor
	// AuditReader serves GET /v1/audit. Nil: the route answers 404.
	AuditReader AuditReader
	// KeyAdmin serves /v1/api-keys. Nil: those routes answer 404.
	KeyAdmin KeyAdmin
	// Limits bound how long request bodies may take (limits.go).
	Limits Limits
	// PublicURL is the base URL people's browsers reach tokenbroker at
	// (config public_url): connect links and the OAuth callback
	// (PublicURL + "/v1/connect/callback") are built from it, never from
	// the request's Host header. Empty: the connect routes answer 404.
	PublicURL string
}

// Metrics observes the API's answers. metrics.Metrics (package metrics)
// satisfies it. Implementations must be cheap and safe for concurrent use.
type Metrics interface {
	// RequestServed reports one answer: route is its pattern in the route
	// table ("" when none matched), code the status sent (499 when the
	// client went away first).
	RequestServed(route string, code int)
	// TokenServed and ProxyServed report the result of a token request and
	// of a proxied call: "" when it succeeded (for the proxy: the provider
	// answered, whatever its status), else the API error code answered,
	// or "canceled".
	TokenServed(result string)
	ProxyServed(result string)
}

type noMetrics struct{}

func (noMetrics) RequestServed(string, int) {}
func (noMetrics) TokenServed(string)        {}
func (noMetrics) ProxyServed(string)        {}

// statusClientClosed is logged (never sent) for a request whose client went
// away before it was answered, as nginx does.
const statusClientClosed = 499

const (
	defaultMaxBody     = 1 << 20
	defaultKeyCacheTTL = 10 * time.Second
	keyCacheSize       = 1024
	readyTimeout       = 5 * time.Second
)

// Server is tokenbroker's HTTP API. Create it with [New]; it is safe for
// concurrent use.
type Server struct {
	broker         Broker
	keys           KeyStore
	targets        map[string]ProxyTarget
	proxyTransport http.RoundTripper
	mcpTransport   http.RoundTripper
	maxReplay      int64
	maxBody        int64
	ready          func(context.Context) error
	log            *slog.Logger
	now            func() time.Time
	cache          *keyCache
	proxyLog       *log.Logger            // for httputil.ReverseProxy's own complaints
	mcpProxy       *httputil.ReverseProxy // every call to an MCP server (mcpproxy.go)
	metrics        Metrics
	metricsHandler http.Handler
	ui             http.Handler
	publicURL      string // no trailing slash; see connect.go
	audit          Auditor
	auditReader    AuditReader
	keyAdmin       KeyAdmin
	limits         Limits

	mux     *http.ServeMux
	handler http.Handler
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Broker == nil {
		return nil, errors.New("server: Options.Broker is required")
	}
	if opts.Keys == nil {
		return nil, errors.New("server: Options.Keys is required")
	}
	s := &Server{
		broker:         opts.Broker,
		keys:           opts.Keys,
		targets:        make(map[string]ProxyTarget, len(opts.Targets)),
		proxyTransport: opts.ProxyTransport,
		mcpTransport:   opts.MCPTransport,
		maxReplay:      opts.MaxReplayBody,
		maxBody:        opts.MaxBodyBytes,
		ready:          opts.Ready,
		metrics:        opts.Metrics,
		metricsHandler: opts.MetricsHandler,
		log:            opts.Logger,
		now:            opts.Now,
		ui:             opts.UI,
		audit:          opts.Audit,
		auditReader:    opts.AuditReader,
		keyAdmin:       opts.KeyAdmin,
		limits:         opts.Limits.withDefaults(),
	}
	if s.audit == nil {
		s.audit = noAudit{}
	}
	if err := s.setPublicURL(opts.PublicURL); err != nil {
		return nil, err
	}
	for name, t := range opts.Targets {
		if t.BaseURL == nil {
			continue // no api_base_url: the proxy answers that it has none
		}
		if err := checkBaseURL(t.BaseURL); err != nil {
			return nil, fmt.Errorf("server: provider %q: api_base_url: %w", name, err)
		}
		for _, code := range t.RefreshOn {
			if code < 100 || code > 599 {
				return nil, fmt.Errorf("server: provider %q: refresh_on: %d is not an HTTP status", name, code)
			}
		}
		t.RefreshOn = append([]int(nil), t.RefreshOn...)
		t.allow = allowSet(t.AllowResponseHeaders)
		s.targets[name] = t
	}
	if s.mcpTransport == nil {
		s.mcpTransport = mcpauth.NewHTTPClient(mcpauth.HostPolicy{}, 0, nil).Transport
	}
	if s.proxyTransport == nil {
		s.proxyTransport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if s.maxReplay <= 0 {
		s.maxReplay = defaultMaxBody
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.metrics == nil {
		s.metrics = noMetrics{}
	}
	s.proxyLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	for name, t := range s.targets {
		allow := t.allow
		t.rp = s.newReverseProxy(0, func(resp *http.Response) error {
			filterResponseHeaders(resp.Header, allow)
			return nil
		})
		s.targets[name] = t
	}
	s.mcpProxy = s.newMCPProxy()
	ttl := opts.KeyCacheTTL
	if ttl == 0 {
		ttl = defaultKeyCacheTTL
	}
	if ttl > 0 {
		s.cache = newKeyCache(ttl, keyCacheSize, s.now)
	}

	// Every handler on the mux must be a s.route: serve treats an answer
	// no route's handler took over (muxWriter) as the mux's own 404/405.
	s.mux = http.NewServeMux()
	for _, rt := range routes() {
		s.mux.Handle(rt.pattern, s.route(rt))
	}
	s.handler = http.HandlerFunc(s.serve)
	return s, nil
}

// Handler returns the HTTP handler serving every route.
func (s *Server) Handler() http.Handler { return s.handler }

// access says who may call a route: nobody's key (public), a session
// cookie (the dashboard), or API keys of the roles whose bits are set.
type access uint8

const (
	accessPublic access = 0 // no API key

	allowAdmin   access = 1 << iota // admin keys
	allowTokens                     // tokens keys
	allowProxy                      // proxy keys
	allowConnect                    // connect keys

	accessSession access = 1 << 7 // no API key: the handler checks its own session cookie

	accessAdmin = allowAdmin
	// accessStatus may read a connection's status and call through it:
	// everyone but connect keys.
	accessStatus = allowAdmin | allowTokens | allowProxy
	// accessTokens may read raw tokens: never proxy keys.
	accessTokens  = allowAdmin | allowTokens
	accessConnect = allowAdmin | allowConnect
)

// roleAccess is the bit of a key's role.
func roleAccess(role string) access {
	switch role {
	case ScopeAdmin:
		return allowAdmin
	case ScopeTokens:
		return allowTokens
	case ScopeProxy:
		return allowProxy
	case ScopeConnect:
		return allowConnect
	}
	return 0
}

// route is one entry of the route table. Every route is registered from
// [routes], so a test can walk them all.
type route struct {
	pattern string // http.ServeMux pattern
	access  access
	handle  func(s *Server, w http.ResponseWriter, r *http.Request)
	// audit is the action recorded in the audit log for every answer of
	// this route (audit.go); "" records nothing.
	audit string
}

// Patterns of the routes whose answers have their own metrics.
const (
	patternToken = "GET /v1/connections/{id}/token"
	patternProxy = "/v1/proxy/{id}/{path...}"
)

func routes() []route {
	return []route{
		{"POST /v1/connections", accessAdmin, (*Server).importConnection, ActionImport},
		{"POST /v1/connections:batch", accessAdmin, (*Server).importBatch, ActionImport}, // batch.go
		{"GET /v1/connections", accessAdmin, (*Server).listConnections, ""},
		{"GET /v1/connections/{id}", accessStatus, (*Server).getConnection, ""},
		{patternToken, accessTokens, (*Server).getToken, ActionTokenRead},
		// A stale report hands out a (new) token too: recorded as a read.
		{"POST /v1/connections/{id}/token", accessTokens, (*Server).reportStale, ActionTokenRead}, // stale.go
		{"POST /v1/connections/{id}/refresh", accessAdmin, (*Server).refreshConnection, ActionRefresh},
		{"PUT /v1/connections/{id}", accessAdmin, (*Server).reimportConnection, ActionReimport},
		{"DELETE /v1/connections/{id}", accessAdmin, (*Server).deleteConnection, ActionDelete},
		{patternProxy, accessStatus, (*Server).proxy, ActionProxy},
		{"GET /healthz", accessPublic, (*Server).healthz, ""},
		{"GET /readyz", accessPublic, (*Server).readyz, ""},
		{"GET /metrics", accessAdmin, (*Server).serveMetrics, ""},
		{"/ui/", accessSession, (*Server).dashboard, ""},
		// The connect flow (connect.go). The two GET routes are opened by
		// the person granting access, who has no API key: the session id
		// and the state are the capabilities.
		{"POST /v1/connect-sessions", accessConnect, (*Server).createConnectSession, ActionConnectSession},
		{"GET /v1/connect/{session}", accessPublic, (*Server).connectStart, ""},
		{"GET /v1/connect/callback", accessPublic, (*Server).connectCallback, ActionConnect},
		{"GET " + ClientMetadataPath, accessPublic, (*Server).clientMetadata, ""},
		// Public: it describes the API and holds no secrets, and tools
		// (code generators, API explorers) fetch it without a key.
		{"GET /v1/openapi.json", accessPublic, (*Server).openAPI, ""},
		{"GET /v1/audit", accessAdmin, (*Server).listAudit, ""},
		// Key management (apikeys.go).
		{"POST /v1/api-keys", accessAdmin, (*Server).createAPIKey, ActionKeyCreate},
		{"GET /v1/api-keys", accessAdmin, (*Server).listAPIKeys, ""},
		{"DELETE /v1/api-keys/{key}", accessAdmin, (*Server).revokeAPIKey, ActionKeyRevoke},
	}
}

// requestInfo is what the request log line says about a request. Handlers
// fill it in as they learn more.
type requestInfo struct {
	pattern    string
	connection string
	key        string
	keyName    string
	admin      bool
	errCode    string
	// apiKey is the authenticated key, for scope checks in handlers.
	apiKey store.APIKey
	// proxy is the state of a proxied call (proxy.go).
	proxy *proxyCall
	// audit is the route's audit action; auditDetail adds to it.
	audit       string
	auditDetail string
}

type requestInfoKey struct{}

func info(ctx context.Context) *requestInfo {
	if ri, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{} // a handler called outside serve, as in a unit test
}

// serve wraps every request: path check, routing, 404/405 in our error
// format, panic recovery and the request log line.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	ri := &requestInfo{}
	r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, ri))
	rec := &recorder{ResponseWriter: w}
	// Until a key is recognised, a body gets the short deadline of
	// unauthenticated routes (limits.go).
	r = s.startBodyDeadline(rec, r)

	defer func() {
		v := recover()
		// A panic after the response began cannot be turned into an error
		// answer: abort the connection so the client sees it is incomplete.
		abort := v == http.ErrAbortHandler || (v != nil && rec.wrote)
		if v != nil && v != http.ErrAbortHandler {
			// The panic value and the request may hold secrets; the type
			// and the stack (which prints no string contents) do not.
			s.log.Error("panic serving request", "route", ri.pattern,
				"panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
			if !rec.wrote {
				s.writeError(rec, r, apiError{status: http.StatusInternalServerError, code: codeInternal, message: msgInternal})
			}
		}
		status := rec.status
		switch {
		case rec.wrote:
		case ri.errCode == errCodeCanceled:
			status = statusClientClosed
		default:
			status = http.StatusOK // net/http answers 200 for a handler that wrote nothing
		}
		s.logRequest(r, ri, status, start)
		s.observe(ri, status)
		s.recordAudit(ri, r.Method, status)
		if abort {
			panic(http.ErrAbortHandler)
		}
	}()

	// ServeMux would answer an unclean path with a redirect to its cleaned
	// form; refuse it instead, before any routing.
	if err := checkRequestPath(r.URL); err != nil {
		s.writeError(rec, r, invalid(err.Error()))
		return
	}
	// One match of the route table per request: a route's handler takes
	// the real writer back from mw (route). When no route matches, what
	// the mux writes itself stays in mw and is answered here instead.
	mw := &muxWriter{rec: rec}
	s.mux.ServeHTTP(mw, r)
	if mw.routed {
		return
	}
	switch {
	case mw.status >= 300 && mw.status < 400:
		// A redirect to the path with a trailing slash (/ui to /ui/).
		maps.Copy(rec.Header(), mw.header)
		rec.WriteHeader(mw.status)
		_, _ = rec.Write(mw.body)
	case mw.status == http.StatusMethodNotAllowed:
		rec.Header().Set("Allow", mw.header.Get("Allow"))
		s.writeError(rec, r, apiError{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed,
			message: "method " + r.Method + " is not allowed here"})
	default:
		s.writeError(rec, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "no such route"})
	}
}

// logRequest writes the request's log line. The level is checked first:
// the attributes would be built (and allocated) for nothing at the
// default warn level.
func (s *Server) logRequest(r *http.Request, ri *requestInfo, status int, start time.Time) {
	if !s.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	pattern := ri.pattern
	if pattern == "" {
		pattern = "-"
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", pattern),
		slog.Int("status", status),
		slog.Duration("duration", s.now().Sub(start)),
	}
	if ri.connection != "" {
		attrs = append(attrs, slog.String("connection", ri.connection))
	}
	if ri.key != "" {
		attrs = append(attrs, slog.String("key", ri.key))
	}
	if ri.errCode != "" {
		attrs = append(attrs, slog.String("error", ri.errCode))
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// route wraps a route's handler with authentication and the scope check.
func (s *Server) route(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mw, ok := w.(*muxWriter); ok {
			w = mw.route()
		}
		ri := info(r.Context())
		ri.pattern = rt.pattern
		// With tracing on, the request's span is named by its route, never
		// by the raw path (which holds connection ids); without, a no-op.
		trace.SpanFromContext(r.Context()).SetName(rt.pattern)
		if id := r.PathValue("id"); id != "" {
			if broker.ValidID(id) {
				ri.connection = id
			} else {
				ri.connection = "(invalid)"
			}
		}
		ri.audit = rt.audit
		if rt.access != accessPublic && rt.access != accessSession {
			key, err := s.authenticate(r)
			if err != nil {
				// Nothing of the body is read: the connection closes after
				// the answer instead of draining what a stranger sends.
				s.abandonBody(w, r)
				s.fail(w, r, err)
				return
			}
			ri.key, ri.keyName, ri.admin, ri.apiKey = key.ID, key.Name, key.Scope == ScopeAdmin, key
			s.extendReadDeadline(r)
			if rt.access&roleAccess(key.Scope) == 0 {
				s.abandonBody(w, r)
				s.writeError(w, r, apiError{status: http.StatusForbidden, code: codeForbidden,
					message: "this API key's scope does not allow this route"})
				return
			}
			// One rule for every route with a connection in its path: a
			// connection outside the key's scope is answered as missing.
			if id := r.PathValue("id"); id != "" {
				if err := s.checkScope(r.Context(), key, id); err != nil {
					s.fail(w, r, err)
					return
				}
			}
		}
		rt.handle(s, w, r)
	})
}

// dashboard hands /ui/ to the dashboard, which signs operators in by
// cookie and checks its own CSRF tokens.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	if s.ui == nil {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "the dashboard is not enabled"})
		return
	}
	s.ui.ServeHTTP(w, r)
}

// observe reports an answer to the metrics. The result is the error code
// written, a fixed vocabulary: never anything from the request.
func (s *Server) observe(ri *requestInfo, status int) {
	s.metrics.RequestServed(ri.pattern, status)
	switch ri.pattern {
	case patternToken:
		s.metrics.TokenServed(ri.errCode)
	case patternProxy:
		s.metrics.ProxyServed(ri.errCode)
	}
}

// serveMetrics serves the Prometheus exposition. It is an admin route: the
// metrics name providers and show their health.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metricsHandler == nil {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "metrics are not enabled"})
		return
	}
	s.metricsHandler.ServeHTTP(w, r)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		err := s.ready(ctx)
		cancel()
		if err != nil {
			s.log.WarnContext(r.Context(), "not ready", "error", err)
			s.writeJSON(w, r, http.StatusServiceUnavailable, map[string]string{"status": "not_ready"})
			return
		}
	}
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ready"})
}

// recorder remembers the status for the log line. It passes Flush and,
// through Unwrap, Hijack and the rest on to the real writer, so proxied
// responses stream and upgrades work.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *recorder) WriteHeader(code int) {
	if !w.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(p)
}

func (w *recorder) Flush() {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// muxWriter is the writer the ServeMux gets. A route's handler unwraps it
// at once (route); the mux's own answers for a request no route matches
// (404, 405 with Allow, a redirect) are kept for serve to rewrite.
type muxWriter struct {
	rec    *recorder
	routed bool

	header http.Header
	status int
	body   []byte
}

// route returns the real writer for a route's handler.
func (m *muxWriter) route() http.ResponseWriter {
	m.routed = true
	return m.rec
}

func (m *muxWriter) Header() http.Header {
	if m.header == nil {
		m.header = http.Header{}
	}
	return m.header
}

func (m *muxWriter) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}

func (m *muxWriter) Write(p []byte) (int, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	m.body = append(m.body, p...)
	return len(p), nil
}
