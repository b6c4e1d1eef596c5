// Package app assembles a running tokenbroker from its configuration: the
// store, the key ring, the providers' endpoints, the broker and the HTTP
// server. It is the only place that knows every concrete type; the packages
// it wires talk to each other through their own small interfaces.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/metrics"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
	"github.com/tokenbroker/tokenbroker/provider"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/postgres"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// FallbackExpiresIn is the access-token lifetime assumed for a provider
// that states none and has no default_expires_in configured.
const FallbackExpiresIn = time.Hour

// TokenCacheSize bounds the broker's cache of valid access tokens: about
// 300 bytes each, so the cache stays under a few megabytes however many
// connections are stored.
const TokenCacheSize = 10000

// Options are what the process gives the app beyond the config file.
type Options struct {
	Logger *slog.Logger
	// HTTPClient is used for every call to a provider. Default: a client
	// with timeouts, never http.DefaultClient's unbounded one.
	HTTPClient *http.Client
	Now        func() time.Time
	// Out receives the one-time bootstrap API key; default os.Stdout.
	Out io.Writer
	// SkipMigrate opens the database without migrating it: the schema
	// must already be current (`tokenbroker migrate up` ran first).
	SkipMigrate bool
	// TracerProvider, if not nil, traces HTTP requests, refreshes, lease
	// waits, store calls and provider calls (internal/tracing). Nil: no
	// instrumentation at all.
	TracerProvider trace.TracerProvider
}

// App is an assembled tokenbroker.
type App struct {
	Config  *config.Config
	Store   store.Backend
	Keys    *ReloadingKeyRing
	Broker  *broker.Broker
	Server  *server.Server
	Catalog *provider.Catalog
	// Scheduler refreshes due connections in the background while the app
	// serves; nil when disabled in the config.
	Scheduler *scheduler.Scheduler
	// Webhooks delivers the store's outbox to the configured endpoints
	// while the app serves; nil when the store has no outbox.
	Webhooks *webhook.Dispatcher
	// Registry holds this app's metrics, served at /metrics. Components
	// added to the app register their collectors here, never on the
	// global default registry.
	Registry *prometheus.Registry
	Metrics  *metrics.Metrics
	// Audit records the audit trail while the app serves; nil when
	// disabled in the config.
	Audit       *audit.Recorder
	auditStream io.Closer
	log         *slog.Logger

	// draining is set when shutdown starts: /readyz fails from then on.
	draining atomic.Bool
	tp       trace.TracerProvider
}

// KeyFileWatchInterval is how often an idle server looks at its key file
// for a rotated key (a server that writes looks before each write).
const KeyFileWatchInterval = 2 * time.Second

// OpenStore opens the configured database, creating and migrating it on
// first use.
func OpenStore(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time) (store.Backend, error) {
	return openStore(ctx, cfg, log, now, false)
}

// OpenStoreNoMigrate opens the configured database without touching its
// schema, for `tokenbroker migrate`.
func OpenStoreNoMigrate(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time) (store.Backend, error) {
	return openStore(ctx, cfg, log, now, true)
}

func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time, skipMigrate bool) (store.Backend, error) {
	driver, dsn, err := cfg.DatabaseDSN()
	if err != nil {
		return nil, err
	}
	switch driver {
	case "sqlite":
		return sqlite.Open(ctx, dsn, sqlite.Options{Now: now, Logger: log, SkipMigrate: skipMigrate})
	case "postgres":
		return postgres.Open(ctx, dsn, postgres.Options{Now: now, Logger: log, SkipMigrate: skipMigrate})
	default:
		return nil, fmt.Errorf("database: %s is not supported by this build", driver)
	}
}

// New builds the app: it opens the store and the key ring (creating both on
// first start) and builds one token endpoint per configured provider.
func New(ctx context.Context, cfg *config.Config, opts Options) (*App, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	hc = traceClient(hc, opts.TracerProvider) // tracing.go
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	catalog, err := cfg.Catalog()
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, log, now, opts.SkipMigrate)
	if err != nil {
		return nil, err
	}
	if m, ok := st.(store.Migrator); ok && opts.SkipMigrate {
		if err := store.CheckSchema(ctx, m); err != nil {
			st.Close()
			return nil, err
		}
	}
	// The key file is checked against the data before anything is served:
	// a missing or wrong key file fails the start, never every request.
	keys, created, err := OpenKeyRing(ctx, cfg.EncryptionKeysFile, st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	if created {
		log.Info("created a new encryption key file; back it up: without it stored tokens cannot be read", "path", cfg.EncryptionKeysFile)
	}
	a := &App{Config: cfg, Store: st, Keys: keys, Catalog: catalog, log: log, tp: opts.TracerProvider}
	if a.Audit, a.auditStream, err = newAudit(cfg, st, log, now); err != nil {
		st.Close()
		return nil, err
	}
	if err := a.newMetrics(now); err != nil {
		st.Close()
		return nil, err
	}

	providers := make(map[string]broker.Provider)
	limits := make(map[string]scheduler.Limit)
	targets := make(map[string]server.ProxyTarget)
	authStyles := &oauth.AuthStyleCache{}
	discovery := oauth.NewDiscoveryCache(time.Hour)
	for _, name := range catalog.Names() {
		p, _ := catalog.Get(name)
		if p.DefaultExpiresIn <= 0 {
			// A token whose lifetime nobody states is never treated as
			// immortal: it is refreshed at least this often.
			p.DefaultExpiresIn = FallbackExpiresIn
		}
		style, err := oauth.ParseAuthStyle(p.AuthStyle)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("providers[%s].auth_style: %w", name, err)
		}
		ep, err := oauth.NewEndpoint(oauth.Config{
			ClientID:         p.ClientID,
			ClientSecret:     p.ClientSecret,
			TokenURL:         p.TokenURL,
			Issuer:           p.Issuer,
			AuthorizeURL:     p.AuthorizeURL,
			IntrospectionURL: p.IntrospectionURL,
			RevocationURL:    p.RevocationURL,
			AuthStyle:        style,
			DefaultExpiresIn: p.DefaultExpiresIn,
			HTTPClient:       hc,
			Now:              now,
			AuthStyles:       authStyles,
			Discovery:        discovery,
		})
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("providers[%s]: %w", name, err)
		}
		limits[name] = scheduler.Limit{Rate: p.TokenRateLimit, Burst: p.TokenRateBurst}
		providers[name] = broker.Provider{
			Name:       name,
			Endpoint:   ep,
			Policy:     policyOf(p, cfg.Refresh),
			TokenRate:  p.TokenRateLimit,
			TokenBurst: p.TokenRateBurst,
			// With an issuer the endpoints may be discovered; the endpoint
			// answers oauth.ErrNoIntrospection/ErrNoRevocation if not.
			CanIntrospect: p.IntrospectionURL != "" || p.Issuer != "",
			CanRevoke:     p.RevocationURL != "" || p.Issuer != "",
			// For the connect flow and client-credentials connections.
			Scopes:     p.Scopes,
			AuthParams: p.AuthParams,
		}
		if p.APIBaseURL != "" {
			u, err := url.Parse(p.APIBaseURL)
			if err != nil {
				st.Close()
				return nil, fmt.Errorf("providers[%s].api_base_url: %w", name, err)
			}
			targets[name] = server.ProxyTarget{BaseURL: u, RefreshOn: p.RefreshOn, AllowResponseHeaders: allowHeaders(cfg, name)}
			if p.RefreshOnInvalidToken {
				// A 401 is stale only when its challenge says so.
				on := []int{}
				for _, st := range p.RefreshOn {
					if st != http.StatusUnauthorized {
						on = append(on, st)
					}
				}
				targets[name] = server.ProxyTarget{BaseURL: u, RefreshOn: on, RefreshOnInvalidToken: true, AllowResponseHeaders: allowHeaders(cfg, name)}
			}
		}
	}

	// With a database other processes share, the token cache is trusted
	// only while the store's change feed follows their writes; SQLite is
	// one process's own.
	changes, _ := st.(store.ChangeFeed)
	mcpPolicy := mcpauth.HostPolicy{AllowPrivate: cfg.MCP.AllowPrivateAddresses}
	mcpOpts := &broker.MCPOptions{
		Policy:      mcpPolicy,
		HTTPClient:  mcpauth.NewHTTPClient(mcpPolicy, 0, nil),
		RedirectURI: cfg.PublicURL + "/v1/connect/callback",
		// MCP servers' tokens follow the defaults, and one that states no
		// lifetime is not taken for immortal.
		Lifecycle: lifecycle.Policy{DefaultLifetime: FallbackExpiresIn},
	}
	for _, mc := range cfg.MCP.Clients {
		secret, err := mc.Secret(os.LookupEnv)
		if err != nil {
			st.Close()
			return nil, err
		}
		if mcpOpts.Clients == nil {
			mcpOpts.Clients = map[string]broker.MCPClient{}
		}
		mcpOpts.Clients[mc.Issuer] = broker.MCPClient{ClientID: mc.ClientID, ClientSecret: secret,
			TokenEndpointAuthMethod: mc.TokenEndpointAuthMethod}
	}
	if strings.HasPrefix(cfg.PublicURL, "https://") {
		// A Client ID Metadata Document's URL must be https.
		mcpOpts.ClientMetadataURL = cfg.PublicURL + server.ClientMetadataPath
	}
	a.Broker, err = broker.New(broker.Options{
		MCP:            mcpOpts,
		TokenCacheSize: TokenCacheSize,
		Changes:        changes,
		Store:          st,
		Tracer:         tracer(opts.TracerProvider),
		Sealer:         keys,
		Providers:      providers,
		RefreshTimeout: cfg.Refresh.Timeout,
		LeaseTTL:       cfg.Refresh.LeaseTTL,
		Now:            now,
		Logger:         log,
		Metrics:        a.Metrics,
		// The dispatcher is built after the broker; events reach it once it
		// exists and wake it at once instead of at its next poll.
		Events: eventSinkFunc(func(ctx context.Context, e broker.Event) {
			a.auditEvent(e)
			if a.Webhooks != nil {
				a.Webhooks.Emit(ctx, e)
			}
		}),
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := a.newScheduler(cfg, limits, now); err != nil {
		st.Close()
		return nil, err
	}
	if err := a.newWebhooks(cfg, now); err != nil {
		st.Close()
		return nil, err
	}
	proxyTransport := http.DefaultTransport.(*http.Transport).Clone()
	proxyTransport.MaxIdleConnsPerHost = 64
	proxyTransport.ResponseHeaderTimeout = cfg.Proxy.Timeout
	mcpTransport := mcpauth.NewHTTPClient(mcpPolicy, 0, nil).Transport.(*http.Transport)
	mcpTransport.ResponseHeaderTimeout = cfg.Proxy.Timeout
	dashboard, err := newDashboard(a, cfg, log, now)
	if err != nil {
		st.Close()
		return nil, err
	}
	a.Server, err = server.New(server.Options{
		UI:             dashboard,
		PublicURL:      cfg.PublicURL,
		Broker:         a.Broker,
		Keys:           st,
		Targets:        targets,
		ProxyTransport: traceTransport(proxyTransport, opts.TracerProvider),
		MCPTransport:   traceTransport(mcpTransport, opts.TracerProvider),
		MaxReplayBody:  cfg.Proxy.MaxReplayBody,
		Ready:          a.ready,
		Logger:         log,
		Now:            now,
		Metrics:        a.Metrics,
		MetricsHandler: metrics.Handler(a.Registry, log),
		Audit:          a.auditor(),
		AuditReader:    st,
		KeyAdmin:       st,
		Limits: server.Limits{
			BodyTimeout:       cfg.Security.BodyTimeout,
			PublicBodyTimeout: cfg.Security.PublicBodyTimeout,
		},
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// policyOf is the lifecycle policy a provider profile describes.
func policyOf(p provider.Profile, r config.RefreshConfig) lifecycle.Policy {
	return lifecycle.Policy{
		OnErrorInterval:      r.OnErrorInterval,
		Window:               p.RefreshWindow,
		DefaultLifetime:      p.DefaultExpiresIn,
		RefreshTokenLifetime: p.RefreshTokenLifetime,
		RefreshIdleTimeout:   p.RefreshIdleTimeout,
		Rotation:             lifecycle.Rotation(p.Rotation),
		RotationGrace:        p.RotationGrace,
		BadRequestTransient:  p.BadRequestTransient,
	}
}

// newScheduler builds the background refresh scheduler, claiming under the
// broker's own owner name so logs and claims tell replicas apart.
func (a *App) newScheduler(cfg *config.Config, limits map[string]scheduler.Limit, now func() time.Time) error {
	if cfg.Scheduler.Disabled {
		return nil
	}
	opts := scheduler.Options{
		Store:       a.Store,
		Refresher:   a.scheduledRefresher(),
		Owner:       a.Broker.Owner(),
		Interval:    cfg.Scheduler.Interval,
		Concurrency: cfg.Scheduler.Concurrency,
		BatchSize:   cfg.Scheduler.BatchSize,
		Limits:      limits,
		Now:         now,
		Logger:      a.log,
		Metrics:     a.Metrics,
	}
	var err error
	a.Scheduler, err = scheduler.New(opts)
	return err
}

// newMetrics creates the app's registry with the Go runtime and process
// collectors and tokenbroker's own.
func (a *App) newMetrics(now func() time.Time) error {
	a.Registry = prometheus.NewRegistry()
	if err := a.Registry.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := a.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var err error
	a.Metrics, err = metrics.New(metrics.Options{
		Registerer:  a.Registry,
		Providers:   a.Catalog.Names(),
		Connections: a.Store,
		Now:         now,
		Logger:      a.log,
	})
	return err
}

// newDashboard builds the /ui/ dashboard. Its session cookies are signed
// with keys derived from the encryption key ring, read per request so a
// reloaded ring applies at once: a rotation keeps sessions (the old key
// still verifies), removing a key from the file signs its sessions out.
func newDashboard(a *App, cfg *config.Config, log *slog.Logger, now func() time.Time) (*ui.Handler, error) {
	opts := ui.Options{
		Broker:      a.Broker,
		Keys:        a.Store,
		SessionKeys: func() [][]byte { return a.Keys.ring.Load().DeriveKeys(ui.SessionKeyPurpose) },
		Providers:   a.Catalog.Names(),
		Logger:      log,
		Now:         now,
		Events:      eventHistory{a.Store},
		Counter:     newCountCache(statusCounts{a.Store}, dashboardCountsTTL, now, log), // counts.go
		// Behind a TLS-terminating proxy the request looks like http: the
		// public URL says what the browser uses.
		SecureCookies:       cfg.SecureCookies(),
		TrustForwardedProto: cfg.Security.TrustForwardedProto,
		Audit:               a.uiAuditor(),
		AuditReader:         a.Store,
		KeyAdmin:            a.Store,
		MakeKey:             makeKey,
		// A key revoked on the dashboard stops working on this server's
		// API at once, not when its cache entry expires.
		KeyRevoked: func() {
			if a.Server != nil {
				a.Server.ForgetKeys()
			}
		},
	}
	if cfg.PublicURL != "" {
		opts.Reconnect = reconnectLinks{broker: a.Broker, publicURL: strings.TrimRight(cfg.PublicURL, "/")}
	}
	return ui.New(opts)
}

// eventHistory shows the store's outbox as the dashboard's event history.
type eventHistory struct{ src store.Outbox }

func (e eventHistory) ConnectionEvents(ctx context.Context, id string, limit int) ([]ui.Event, error) {
	evs, err := e.src.ConnectionEvents(ctx, id, limit)
	out := make([]ui.Event, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ui.Event{Type: ev.Type, Code: ev.Code, At: ev.At})
	}
	return out, err
}

// statusCounts sums the store's per-provider counts into the dashboard's
// per-status summary.
type statusCounts struct{ src store.ConnectionCounter }

func (s statusCounts) CountByStatus(ctx context.Context) (map[string]int, error) {
	groups, err := s.src.CountConnections(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, 4)
	for g, n := range groups {
		out[g.Status] += n
	}
	return out, nil
}

// reconnectLinks makes the dashboard's reconnect links: a connect session
// for the connection's own id and provider, whose link
// (public_url/v1/connect/{session}, as POST /v1/connect-sessions answers)
// gives the connection a new grant when completed.
type reconnectLinks struct {
	broker    *broker.Broker
	publicURL string
}

func (r reconnectLinks) ReconnectLink(ctx context.Context, id string) (string, time.Time, error) {
	c, err := r.broker.GetConnection(ctx, id)
	if err != nil {
		return "", time.Time{}, err
	}
	s, err := r.broker.CreateConnectSession(ctx, broker.ConnectRequest{ConnectionID: c.ID, Provider: c.Provider})
	if err != nil {
		return "", time.Time{}, err
	}
	return r.publicURL + "/v1/connect/" + url.PathEscape(s.ID), s.ExpiresAt, nil
}

// eventSinkFunc adapts a function to broker.EventSink.
type eventSinkFunc func(ctx context.Context, e broker.Event)

func (f eventSinkFunc) Emit(ctx context.Context, e broker.Event) { f(ctx, e) }

// Close releases the store and the audit stream.
func (a *App) Close() error {
	if a.auditStream != nil {
		a.auditStream.Close()
	}
	return a.Store.Close()
}

// BootstrapAPIKey creates an admin key when the store has none and writes
// it, once, to out. Returns whether a key was created.
func (a *App) BootstrapAPIKey(ctx context.Context, out io.Writer, now time.Time) (bool, error) {
	n, err := a.Store.CountAPIKeys(ctx)
	if err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	secret, key, err := server.GenerateAPIKey("bootstrap", "admin", now)
	if err != nil {
		return false, err
	}
	if err := a.Store.CreateAPIKey(ctx, key); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "No API key existed, so an admin key was created. It is shown only this once:\n\n    %s\n\nUse it as \"Authorization: Bearer <key>\". Create more with `tokenbroker apikey create`.\n\n", secret)
	return true, nil
}

// redactDSN hides a password in a database URL before it is logged.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "redacted")
			return u.String()
		}
	}
	return dsn
}

// EnsureDataDir creates the data directory with owner-only permissions.
func EnsureDataDir(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	return nil
}

// newWebhooks builds the webhook dispatcher when the store has an outbox.
// It runs even with no endpoints configured: it then only prunes old
// events, which are also the connections' event history.
func (a *App) newWebhooks(cfg *config.Config, now func() time.Time) error {
	eps := make([]webhook.Endpoint, 0, len(cfg.Webhooks.Endpoints))
	for i, w := range cfg.Webhooks.Endpoints {
		secret, err := w.Secret(nil)
		if err != nil {
			return fmt.Errorf("webhooks.endpoints[%d]: %w", i, err)
		}
		eps = append(eps, webhook.Endpoint{Name: w.Name, URL: w.URL, Secret: secret, Events: w.Events})
	}
	opts := webhook.Options{
		Outbox:    a.Store,
		Endpoints: eps,
		Owner:     a.Broker.Owner(),
		Now:       now,
		Logger:    a.log,
		Metrics:   a.Metrics,
	}
	var err error
	a.Webhooks, err = webhook.New(opts)
	return err
}
