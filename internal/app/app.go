// Package app assembles a running tokenbroker from its configuration: the
// store, the key ring, the providers' endpoints, the broker and the HTTP
// server. It is the only place that knows every concrete type; the packages
// it wires talk to each other through their own small interfaces.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/provider"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/postgres"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
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
}

// App is an assembled tokenbroker.
type App struct {
	Config  *config.Config
	Store   store.Store
	Keys    *ReloadingKeyRing
	Broker  *broker.Broker
	Server  *server.Server
	Catalog *provider.Catalog
	log     *slog.Logger
}

// OpenStore opens the configured database, creating it on first use.
func OpenStore(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time) (store.Store, error) {
	driver, dsn, err := cfg.DatabaseDSN()
	if err != nil {
		return nil, err
	}
	switch driver {
	case "sqlite":
		return sqlite.Open(ctx, dsn, sqlite.Options{Now: now, Logger: log})
	case "postgres":
		return postgres.Open(ctx, dsn, postgres.Options{Now: now, Logger: log})
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
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	catalog, err := cfg.Catalog()
	if err != nil {
		return nil, err
	}
	keys, created, err := LoadKeyRing(cfg.EncryptionKeysFile)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created a new encryption key file; back it up: without it stored tokens cannot be read", "path", cfg.EncryptionKeysFile)
	}
	st, err := OpenStore(ctx, cfg, log, now)
	if err != nil {
		return nil, err
	}
	a := &App{Config: cfg, Store: st, Keys: keys, Catalog: catalog, log: log}

	providers := make(map[string]broker.Provider)
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
		providers[name] = broker.Provider{
			Name:                 name,
			Endpoint:             ep,
			RefreshWindow:        p.RefreshWindow,
			DefaultExpiresIn:     p.DefaultExpiresIn,
			RefreshTokenLifetime: p.RefreshTokenLifetime,
			// With an issuer the endpoints may be discovered; the endpoint
			// answers oauth.ErrNoIntrospection/ErrNoRevocation if not.
			CanIntrospect: p.IntrospectionURL != "" || p.Issuer != "",
			CanRevoke:     p.RevocationURL != "" || p.Issuer != "",
		}
		if p.APIBaseURL != "" {
			u, err := url.Parse(p.APIBaseURL)
			if err != nil {
				st.Close()
				return nil, fmt.Errorf("providers[%s].api_base_url: %w", name, err)
			}
			targets[name] = server.ProxyTarget{BaseURL: u, RefreshOn: p.RefreshOn}
		}
	}

	// With a database other processes share, the token cache is trusted
	// only while the store's change feed follows their writes; SQLite is
	// one process's own.
	changes, _ := st.(store.ChangeFeed)
	a.Broker, err = broker.New(broker.Options{
		TokenCacheSize: TokenCacheSize,
		Changes:        changes,
		Store:          st,
		Sealer:         keys,
		Providers:      providers,
		RefreshTimeout: cfg.Refresh.Timeout,
		LeaseTTL:       cfg.Refresh.LeaseTTL,
		Now:            now,
		Logger:         log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	proxyTransport := http.DefaultTransport.(*http.Transport).Clone()
	proxyTransport.MaxIdleConnsPerHost = 64
	proxyTransport.ResponseHeaderTimeout = cfg.Proxy.Timeout
	a.Server, err = server.New(server.Options{
		Broker:         a.Broker,
		Keys:           st,
		Targets:        targets,
		ProxyTransport: proxyTransport,
		MaxReplayBody:  cfg.Proxy.MaxReplayBody,
		Ready:          st.Ping,
		Logger:         log,
		Now:            now,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// Close releases the store.
func (a *App) Close() error { return a.Store.Close() }

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

// Serve listens on the configured address and serves until ctx is
// cancelled, then shuts down gracefully. ready, if not nil, receives the
// bound address once listening (useful with port 0).
func (a *App) Serve(ctx context.Context, ready chan<- net.Addr) error {
	ln, err := net.Listen("tcp", a.Config.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return a.ServeListener(ctx, ln, ready)
}

// ServeListener serves on ln until ctx is cancelled.
func (a *App) ServeListener(ctx context.Context, ln net.Listener, ready chan<- net.Addr) error {
	srv := &http.Server{
		Handler:           a.Server.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	followCtx, stopFollowing := context.WithCancel(context.Background())
	defer stopFollowing()
	go a.Broker.FollowChanges(followCtx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.log.Info("tokenbroker listening", "addr", ln.Addr().String(), "database", redactDSN(a.Config.Database))
	if ready != nil {
		ready <- ln.Addr()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
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
