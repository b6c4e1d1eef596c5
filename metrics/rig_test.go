package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

const provAcme = "acme"

// rig is the real thing: SQLite store, key ring, a fosite authorization
// server as provider acme, the broker and the HTTP server, all reporting
// to one fresh registry.
type rig struct {
	t        *testing.T
	store    *sqlite.Store
	leases   *leaseSignal
	authz    *authztest.Server
	registry *prometheus.Registry
	metrics  *Metrics
	broker   *broker.Broker
	api      *httptest.Server

	adminKey, tokensKey string

	mu      sync.Mutex
	secrets []string // every token and key value the test has seen
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx := t.Context()
	r := &rig{t: t}
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "tb.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	r.store = st
	r.leases = &leaseSignal{Backend: st, held: make(chan struct{})}
	kr, _, err := seal.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatalf("key ring: %v", err)
	}
	r.authz = authztest.New(t, authztest.Options{})
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID:     r.authz.ClientID,
		ClientSecret: r.authz.ClientSecret,
		TokenURL:     r.authz.TokenURL(),
		Retry:        oauth.Backoff{MaxAttempts: 1}, // one provider call per refresh, so each is counted once
		HTTPClient:   &http.Client{Timeout: 10 * time.Second},
	})
	if err != nil {
		t.Fatalf("endpoint: %v", err)
	}

	r.registry = prometheus.NewRegistry()
	r.metrics, err = New(Options{
		Registerer:    r.registry,
		Providers:     []string{provAcme},
		Connections:   st,
		CountCacheFor: -1, // every scrape counts: the test changes rows between scrapes
	})
	if err != nil {
		t.Fatalf("metrics.New: %v", err)
	}
	r.broker, err = broker.New(broker.Options{
		Store:     r.leases,
		Sealer:    kr,
		Providers: map[string]broker.Provider{provAcme: {Endpoint: ep, Policy: lifecycle.Policy{DefaultLifetime: time.Hour}}},
		Backoff:   oauth.Backoff{Base: time.Second, Max: time.Minute},
		Metrics:   r.metrics,
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"hello":"from the provider"}`))
	}))
	t.Cleanup(upstream.Close)
	base, _ := url.Parse(upstream.URL + "/api")
	srv, err := server.New(server.Options{
		Broker:         r.broker,
		Keys:           st,
		Targets:        map[string]server.ProxyTarget{provAcme: {BaseURL: base}},
		Metrics:        r.metrics,
		MetricsHandler: Handler(r.registry, nil),
	})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	r.api = httptest.NewServer(srv.Handler())
	t.Cleanup(r.api.Close)
	r.adminKey = r.newKey(server.ScopeAdmin)
	r.tokensKey = r.newKey(server.ScopeTokens)
	return r
}

func (r *rig) newKey(scope string) string {
	r.t.Helper()
	secret, key, err := server.GenerateAPIKey("test "+scope, scope, time.Now())
	if err != nil {
		r.t.Fatalf("GenerateAPIKey: %v", err)
	}
	if err := r.store.CreateAPIKey(r.t.Context(), key); err != nil {
		r.t.Fatalf("CreateAPIKey: %v", err)
	}
	r.remember(secret)
	return secret
}

func (r *rig) remember(values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		if v != "" {
			r.secrets = append(r.secrets, v)
		}
	}
}

func (r *rig) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.secrets...)
}

// importConn imports a fresh grant of the authorization server.
func (r *rig) importConn(id string) {
	r.t.Helper()
	access, refresh, _ := r.authz.IssueTokens(r.t, "read")
	r.remember(access, refresh)
	_, err := r.broker.CreateConnection(r.t.Context(), broker.Import{
		ID: id, Provider: provAcme, AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour,
	})
	if err != nil {
		r.t.Fatalf("import %s: %v", id, err)
	}
}

// refresh forces a refresh of id and remembers the token it got.
func (r *rig) refresh(id string) error {
	tok, err := r.broker.RefreshConnection(r.t.Context(), id, nil)
	r.remember(tok.AccessToken)
	return err
}

// leaseSignal passes the store through and closes held the first time a
// lease is refused because another owner holds it: from then on the broker
// is waiting for that lease.
type leaseSignal struct {
	store.Backend
	once sync.Once
	held chan struct{}
}

func (s *leaseSignal) AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (store.Connection, error) {
	c, err := s.Backend.AcquireLease(ctx, id, owner, ttl)
	if errors.Is(err, store.ErrLeaseHeld) {
		s.once.Do(func() { close(s.held) })
	}
	return c, err
}
