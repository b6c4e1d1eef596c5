package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store"
)

// Broker is what the dashboard needs from the service core.
// [*broker.Broker] satisfies it.
type Broker interface {
	GetConnection(ctx context.Context, id string) (store.Connection, error)
	ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error)
	// RefreshConnection with stale nil refreshes unconditionally, also
	// during a failure's cooldown: the operator's "Refresh now".
	RefreshConnection(ctx context.Context, id string, stale *string) (broker.Token, error)
	DeleteConnection(ctx context.Context, id string) (revokeErr, err error)
}

var _ Broker = (*broker.Broker)(nil)

// KeyStore finds API keys: by the SHA-256 of the secret when signing in, by
// id on every later request; and keeps the sessions signed in with them,
// so that signing out ends a session server-side. Every [store.Store]
// satisfies it. GetAPIKeyByHash returns [store.ErrNotFound] for unknown and
// revoked keys.
type KeyStore interface {
	GetAPIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error)
	ListAPIKeys(ctx context.Context) ([]store.APIKey, error)
	CreateUISession(ctx context.Context, s store.UISession) error
	GetUISession(ctx context.Context, id string) (store.UISession, error)
	DeleteUISession(ctx context.Context, id string) error
}

// Auditor takes the dashboard's audit entries (sign-in, sign-out, refresh,
// delete); Record must not block on I/O. Package audit's Recorder
// satisfies it.
type Auditor interface {
	Record(e store.AuditEntry)
}

// AuditReader lists a connection's audit entries for its page. Every
// [store.Store] satisfies it.
type AuditReader interface {
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error)
}

// Event is one entry of a connection's history as the detail page shows it.
// It carries codes, never tokens.
type Event struct {
	Type string // connection.created, .refresh_failed, .reauth_required, .recovered, …
	Code string // failure code, when there is one
	At   time.Time
}

// EventLister lists a connection's recent lifecycle events.
type EventLister interface {
	// ConnectionEvents returns at most limit of the connection's most
	// recent events, newest first; none (and no error) for an unknown id.
	ConnectionEvents(ctx context.Context, id string, limit int) ([]Event, error)
}

// Reconnector creates links through which a person re-authorizes a
// connection that needs it.
type Reconnector interface {
	// ReconnectLink returns a URL to hand to the connection's owner and
	// when it stops working.
	ReconnectLink(ctx context.Context, id string) (link string, expiresAt time.Time, err error)
}

// Counter counts connections by health for the summary above the list.
type Counter interface {
	// CountByStatus returns the number of connections per health:
	// "active" (healthy), "failing" (active, last refresh failed),
	// "needs_reauth" and "revoked". Each connection counts once.
	CountByStatus(ctx context.Context) (map[string]int, error)
}

// SessionKeyPurpose is the purpose to derive session keys for with
// [seal.KeyRing.DeriveKeys].
//
// [seal.KeyRing.DeriveKeys]: https://pkg.go.dev/github.com/tokenbroker/tokenbroker/seal#KeyRing.DeriveKeys
const SessionKeyPurpose = "tokenbroker/ui/session/v1"

// Options configures a [Handler]. Broker, Keys and SessionKeys are required.
type Options struct {
	Broker Broker
	Keys   KeyStore
	// SessionKeys returns the keys that sign session cookies and form
	// tokens, at least 32 bytes each: the first signs, all verify. It is
	// called per request, so a reloaded key ring takes effect at once.
	SessionKeys func() [][]byte
	// Providers are the configured provider names, offered by the list's
	// filter.
	Providers []string
	// Events, if set, feeds the detail page's history; without it the page
	// shows the failure record and timestamps only.
	Events EventLister
	// Reconnect, if set, enables "Create reconnect link" on connections
	// that need re-authorization.
	Reconnect Reconnector
	// Counter, if set, shows how many connections are in each state.
	Counter Counter
	// SecureCookies marks every cookie Secure: set it when people reach
	// the dashboard over https (public_url is https), since behind a
	// TLS-terminating proxy the request itself looks like plain http.
	SecureCookies bool
	// TrustForwardedProto marks cookies Secure when the request's
	// X-Forwarded-Proto is https. Only for a proxy that sets (and
	// overwrites) that header; otherwise any client could claim it.
	TrustForwardedProto bool
	// Audit, if set, records sign-ins, sign-outs and the actions taken.
	Audit Auditor
	// AuditReader, if set, shows a connection's audit trail on its page.
	AuditReader AuditReader
	// KeyAdmin and MakeKey, if set, let the keys page create and revoke
	// API keys; without them it lists keys only (revoking needs KeyAdmin).
	KeyAdmin KeyAdmin
	MakeKey  KeyMaker
	// KeyRevoked, if set, is called after a key is revoked here, so the
	// API's key cache can forget it at once.
	KeyRevoked func()
	// SessionTTL is how long a sign-in lasts. Default 12h.
	SessionTTL time.Duration
	// PageSize is the number of connections per list page. Default 50.
	PageSize int
	// Logger receives internal errors; never keys, cookies or tokens.
	// Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default [time.Now].
	Now func() time.Time
}

const (
	defaultSessionTTL = 12 * time.Hour
	defaultPageSize   = 50
	maxFormBytes      = 64 << 10
	eventsShown       = 20
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Handler serves the dashboard under /ui/. Create it with [New]; it is safe
// for concurrent use.
type Handler struct {
	broker      Broker
	keys        KeyStore
	sessionKeys func() [][]byte
	providers   []string
	events      EventLister
	reconnect   Reconnector
	counter     Counter
	secure      bool
	trustProto  bool
	audit       Auditor
	auditReader AuditReader
	keyAdmin    KeyAdmin
	makeKey     KeyMaker
	keyRevoked  func()
	ttl         time.Duration
	pageSize    int
	log         *slog.Logger
	now         func() time.Time

	pages  map[string]*template.Template
	mux    *http.ServeMux
	static http.Handler
}

// Page templates; each is parsed together with layout.html.
var pageNames = []string{"signin", "list", "detail", "delete", "error", "keys"}

// New checks opts and returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Broker == nil {
		return nil, errors.New("ui: Options.Broker is required")
	}
	if opts.Keys == nil {
		return nil, errors.New("ui: Options.Keys is required")
	}
	if opts.SessionKeys == nil {
		return nil, errors.New("ui: Options.SessionKeys is required")
	}
	if err := checkKeys(opts.SessionKeys()); err != nil {
		return nil, err
	}
	h := &Handler{
		broker:      opts.Broker,
		keys:        opts.Keys,
		sessionKeys: opts.SessionKeys,
		providers:   append([]string(nil), opts.Providers...),
		events:      opts.Events,
		reconnect:   opts.Reconnect,
		counter:     opts.Counter,
		secure:      opts.SecureCookies,
		trustProto:  opts.TrustForwardedProto,
		audit:       opts.Audit,
		auditReader: opts.AuditReader,
		keyAdmin:    opts.KeyAdmin,
		makeKey:     opts.MakeKey,
		keyRevoked:  opts.KeyRevoked,
		ttl:         opts.SessionTTL,
		pageSize:    opts.PageSize,
		log:         opts.Logger,
		now:         opts.Now,
		pages:       make(map[string]*template.Template, len(pageNames)),
	}
	if h.ttl <= 0 {
		h.ttl = defaultSessionTTL
	}
	if h.pageSize <= 0 {
		h.pageSize = defaultPageSize
	}
	if h.pageSize > store.MaxListLimit {
		h.pageSize = store.MaxListLimit
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.audit == nil {
		h.audit = noAudit{}
	}
	for _, name := range pageNames {
		t, err := template.New("layout.html").ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("ui: template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("ui: static files: %w", err)
	}
	h.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))

	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET /ui/{$}", h.list)
	h.mux.HandleFunc("POST /ui/signout", h.signout)
	h.mux.HandleFunc("GET /ui/connections/{id}", h.detail)
	h.mux.HandleFunc("POST /ui/connections/{id}/refresh", h.refresh)
	h.mux.HandleFunc("POST /ui/connections/{id}/reconnect", h.createReconnect)
	h.mux.HandleFunc("GET /ui/connections/{id}/delete", h.confirmDelete)
	h.mux.HandleFunc("POST /ui/connections/{id}/delete", h.deleteConnection)
	h.mux.HandleFunc("GET /ui/keys", h.listKeys)
	h.mux.HandleFunc("POST /ui/keys", h.createKey)
	h.mux.HandleFunc("POST /ui/keys/{id}/revoke", h.revokeKey)
	h.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.renderError(w, r, http.StatusNotFound, "There is no such page.")
	})
	return h, nil
}

// ServeHTTP serves the dashboard. Everything but the sign-in page and the
// stylesheet needs a session; every POST needs the form token and a
// same-origin request, checked here once rather than in each handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	switch {
	case r.URL.Path == "/ui":
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
		return
	case r.URL.Path == "/ui/signin":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.signinPage(w, r, http.StatusOK, "")
		case http.MethodPost:
			h.signin(w, r)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			h.renderError(w, r, http.StatusMethodNotAllowed, "That method is not allowed here.")
		}
		return
	case strings.HasPrefix(r.URL.Path, "/ui/static/"):
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.static.ServeHTTP(w, r)
		return
	}

	sess, err := h.session(r)
	if err != nil {
		h.noSession(w, r, err)
		return
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if !sameOrigin(r) {
			h.renderError(w, r, http.StatusForbidden, "This form was not submitted from the dashboard (cross-origin request refused).")
			return
		}
		if !h.validCSRF(sess, r.PostFormValue(csrfField)) {
			h.renderError(w, r, http.StatusForbidden, "The form's security token is missing or out of date. Go back, reload the page and try again.")
			return
		}
	}
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
}

// noSession answers a request without a valid session: pages send the
// browser to sign in and come back; anything else is refused.
func (h *Handler) noSession(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrUnavailable) || !errors.Is(err, errNoSession) {
		h.log.ErrorContext(r.Context(), "dashboard session check failed", "error", err)
		h.renderError(w, r, http.StatusServiceUnavailable, "The database could not be reached. Try again shortly.")
		return
	}
	if _, cerr := r.Cookie(sessionCookie); cerr == nil {
		h.clearCookie(w, r, sessionCookie)
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		target := "/ui/signin"
		if next := r.URL.RequestURI(); safeNext(next) && r.URL.Path != "/ui/" {
			target += "?next=" + url.QueryEscape(next)
		}
		http.Redirect(w, r, target, http.StatusSeeOther)
		return
	}
	h.renderError(w, r, http.StatusUnauthorized, "Your session has ended. Sign in again.")
}

// safeNext reports whether next is a dashboard path to return to after
// signing in, and not a way to send the browser elsewhere.
func safeNext(next string) bool {
	return strings.HasPrefix(next, "/ui/") && !strings.HasPrefix(next, "/ui/signin") &&
		!strings.Contains(next, "\\") && !strings.Contains(next, "//")
}

// securityHeaders keep the pages out of frames, away from caches and from
// running anything but their own stylesheet.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}
