package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// Sealer encrypts token values for the store. *seal.KeyRing satisfies it.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// TokenEndpoint is the part of a provider's authorization server the broker
// calls. *oauth.Endpoint satisfies it.
type TokenEndpoint interface {
	Refresh(ctx context.Context, refreshToken string) (*oauth.Token, error)
	Introspect(ctx context.Context, token, hint string) (*oauth.Introspection, error)
	Revoke(ctx context.Context, token, hint string) error
}

// Provider is the policy and the endpoint the broker uses for one provider.
type Provider struct {
	Name     string
	Endpoint TokenEndpoint
	// Policy decides when a token is due, how a token response lands in a
	// connection, and what a failure means (package lifecycle). Its zero
	// Cooldown and GiveUpAfter take the broker's Options.
	Policy lifecycle.Policy
	// CanIntrospect and CanRevoke say whether the provider has those
	// endpoints, so the broker does not call ones it knows are missing.
	CanIntrospect bool
	CanRevoke     bool
	// TokenRate caps this process's requests to the provider's token
	// endpoint, per second, on every refresh path (on demand, after a
	// rejection, scheduled, forced); TokenBurst is the bucket size (1 when
	// zero). Zero TokenRate: unlimited.
	TokenRate  float64
	TokenBurst int
	// Scopes are requested by the connect flow and by client-credentials
	// connections; AuthParams are extra authorization request parameters
	// (access_type=offline). See broker/connect.go.
	Scopes     []string
	AuthParams map[string]string
}

// Store is what the broker needs of the database: connections with their
// leases, and pending connect flows. Every [store.Backend] satisfies it.
type Store interface {
	CreateConnection(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error)
	store.BatchCreator
	GetConnection(ctx context.Context, id string) (store.Connection, error)
	UpdateConnection(ctx context.Context, id string, update store.Updater) (store.Connection, error)
	CompareAndSwap(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error)
	DeleteConnection(ctx context.Context, id string, events ...store.Event) error
	ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error)
	AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (store.Connection, error)
	ReleaseLease(ctx context.Context, id, owner string) error
	store.ConnectSessions
}

var _ Store = store.Backend(nil)

// Defaults for the zero fields of [Options].
const (
	DefaultRefreshTimeout = 20 * time.Second
	DefaultLeaseTTL       = 30 * time.Second
)

// Options configures a [Broker]. Store, Sealer and Providers are required.
type Options struct {
	Store  Store
	Sealer Sealer
	// Tracer, if not nil, records spans for refreshes, lease waits and
	// store calls (tracing.go); nil records nothing.
	Tracer    trace.Tracer
	Providers map[string]Provider
	// Owner names this process in leases; default a random id. Each replica
	// must have its own.
	Owner string
	// RefreshTimeout bounds one provider call. Default 20s, or less when
	// LeaseTTL needs it (see CheckLeaseTiming).
	RefreshTimeout time.Duration
	// LeaseTTL is how long a lease holds without renewal; a replica that
	// dies holding one blocks the connection at most this long. It must
	// exceed RefreshTimeout by more than LeaseMargin, so that a provider
	// call always ends before its lease could lapse. Default 30s.
	LeaseTTL time.Duration
	// Backoff spaces out attempts after transient failures, for providers
	// whose Policy sets no Cooldown (lifecycle.Policy.CooldownAfter). Zero
	// fields mean base 30s, cap 4h, so a connection that fails for a day
	// costs its provider about 14 attempts, however many callers ask for it.
	Backoff oauth.Backoff
	Now     func() time.Time
	Rand    func() float64
	Logger  *slog.Logger
	// Events receives lifecycle events (refresh failed, reauth required,
	// recovered, created, deleted); nil drops them.
	Events EventSink
	// GiveUpAfter turns transient failures that have lasted this long into
	// needs_reauth, for providers whose Policy sets none: a connection that
	// has not refreshed in days needs a person. Default 72h.
	GiveUpAfter time.Duration
	// Metrics observes refreshes; nil discards.
	Metrics Metrics
	// TokenCacheSize bounds the in-memory cache of valid access tokens that
	// spares the database a read per request; 0 disables it.
	TokenCacheSize int
	// Changes is the store's feed of other processes' writes. With a
	// database shared by several replicas it is required for the token
	// cache, which stays off until the feed is following (call
	// FollowChanges). Nil means this broker is the store's only writer.
	Changes store.ChangeFeed
	// MCP enables connections to MCP servers by URL (broker/mcp.go); nil
	// leaves them off.
	MCP *MCPOptions
}

// EventSink hears about connection lifecycle events in-process, after the
// write that queued them in the store's outbox (which is what webhooks are
// delivered from). Implementations must not block for long: they run on the
// refresh path.
type EventSink interface {
	Emit(ctx context.Context, e Event)
}

// Event is a lifecycle change of one connection. It carries codes, never
// tokens.
type Event = store.Event

// Metrics observes the broker's work. Implementations must be cheap and
// safe for concurrent use.
type Metrics interface {
	// RefreshFinished reports one call to a provider's token endpoint and
	// its outcome: "success", "transient" or "terminal".
	RefreshFinished(provider, outcome string, d time.Duration)
	// LeaseWaited reports how long a refresh waited for another holder of
	// the connection's lease.
	LeaseWaited(provider string, d time.Duration)
}

type noMetrics struct{}

func (noMetrics) RefreshFinished(string, string, time.Duration) {}
func (noMetrics) LeaseWaited(string, time.Duration)             {}

// Event types.
const (
	EventCreated        = "connection.created"
	EventDeleted        = "connection.deleted"
	EventRefreshFailed  = "connection.refresh_failed"
	EventReauthRequired = "connection.reauth_required"
	EventRecovered      = "connection.recovered"
)

// Broker is the service core. It is safe for concurrent use.
type Broker struct {
	// tracer records spans (tracing.go); nil when tracing is off.
	tracer    trace.Tracer
	store     Store
	sealer    Sealer
	providers map[string]Provider
	owner     string
	timeout   time.Duration
	leaseTTL  time.Duration
	now       func() time.Time
	rand      func() float64
	log       *slog.Logger
	events    EventSink

	metrics Metrics

	flights   singleflight.Group
	reads     singleflight.Group // cache misses of one id share a read (cache.go)
	flightSeq atomic.Uint64
	cache     *tokenCache
	changes   store.ChangeFeed
	limits    map[string]*rate.Limiter // by provider; nil: unlimited
	wakers    wakers                   // lease waiters, woken by writes

	// unsaved holds tokens the provider issued that could not be saved yet
	// (the store was unreachable). They are saved before the provider is
	// called again for that connection, since at a rotating provider the
	// refresh token they replace is already spent.
	unsavedMu sync.Mutex
	unsaved   map[string]unsavedToken

	mcp *mcpConnector // nil: MCP connections are off
}

// New returns a Broker.
func New(opts Options) (*Broker, error) {
	if opts.Store == nil {
		return nil, errors.New("broker: Options.Store is required")
	}
	if opts.Sealer == nil {
		return nil, errors.New("broker: Options.Sealer is required")
	}
	b := &Broker{
		store:     traceStore(opts.Store, opts.Tracer),
		tracer:    opts.Tracer,
		sealer:    opts.Sealer,
		providers: make(map[string]Provider, len(opts.Providers)),
		owner:     opts.Owner,
		timeout:   opts.RefreshTimeout,
		leaseTTL:  opts.LeaseTTL,
		now:       opts.Now,
		rand:      opts.Rand,
		log:       opts.Logger,
		events:    opts.Events,
		unsaved:   make(map[string]unsavedToken),
		cache:     newTokenCache(opts.TokenCacheSize, opts.Changes == nil),
		changes:   opts.Changes,
		metrics:   opts.Metrics,
	}
	if b.metrics == nil {
		b.metrics = noMetrics{}
	}
	for name, p := range opts.Providers {
		if p.Endpoint == nil {
			return nil, fmt.Errorf("broker: provider %q has no endpoint", name)
		}
		if p.Name == "" {
			p.Name = name
		}
		if p.Policy.Cooldown.Base <= 0 && p.Policy.Cooldown.Max <= 0 {
			p.Policy.Cooldown = opts.Backoff
		}
		if p.Policy.GiveUpAfter <= 0 {
			p.Policy.GiveUpAfter = opts.GiveUpAfter
		}
		if err := p.Policy.Validate(); err != nil {
			return nil, fmt.Errorf("broker: provider %q: %w", name, err)
		}
		b.providers[name] = p
		if p.TokenRate > 0 {
			if b.limits == nil {
				b.limits = map[string]*rate.Limiter{}
			}
			b.limits[name] = rate.NewLimiter(rate.Limit(p.TokenRate), max(p.TokenBurst, 1))
		}
	}
	if opts.MCP != nil {
		if _, taken := b.providers[store.ProviderMCP]; taken {
			return nil, fmt.Errorf("broker: provider name %q is reserved for MCP connections; rename the provider", store.ProviderMCP)
		}
		m, err := newMCPConnector(*opts.MCP, opts.Store)
		if err != nil {
			return nil, err
		}
		b.mcp = m
		p := mcpPolicy(m.opts)
		if p.Policy.Cooldown.Base <= 0 && p.Policy.Cooldown.Max <= 0 {
			p.Policy.Cooldown = opts.Backoff
		}
		if p.Policy.GiveUpAfter <= 0 {
			p.Policy.GiveUpAfter = opts.GiveUpAfter
		}
		if err := p.Policy.Validate(); err != nil {
			return nil, fmt.Errorf("broker: MCP: %w", err)
		}
		b.providers[store.ProviderMCP] = p
	}
	if b.owner == "" {
		var buf [8]byte
		_, _ = rand.Read(buf[:])
		b.owner = "tb-" + hex.EncodeToString(buf[:])
	}
	if b.leaseTTL <= 0 {
		b.leaseTTL = DefaultLeaseTTL
	}
	if b.timeout <= 0 {
		b.timeout = min(DefaultRefreshTimeout, b.leaseTTL-2*LeaseMargin(b.leaseTTL))
	}
	if err := CheckLeaseTiming(b.timeout, b.leaseTTL); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.rand == nil {
		b.rand = defaultRand
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b, nil
}

// FollowChanges keeps the token cache coherent with other replicas' writes
// until ctx ends. It does nothing without a change feed.
func (b *Broker) FollowChanges(ctx context.Context) {
	if b.changes != nil {
		b.changes.FollowChanges(ctx, b)
	}
}

// Owner is the name this broker takes leases under.
func (b *Broker) Owner() string { return b.owner }

// Provider returns the named provider's policy.
func (b *Broker) Provider(name string) (Provider, bool) {
	p, ok := b.providers[name]
	return p, ok
}

// event builds a lifecycle event for c, to be queued with the write that
// causes it and then passed to emit.
func (b *Broker) event(typ string, c *store.Connection, code string) Event {
	now := b.now()
	return Event{ID: store.NewEventID(now), Type: typ, ConnectionID: c.ID, Provider: c.Provider, Code: code, At: now}
}

// emit tells in-process listeners about events a write just queued.
func (b *Broker) emit(ctx context.Context, events []Event) {
	if b.events == nil {
		return
	}
	for _, e := range events {
		b.events.Emit(ctx, e)
	}
}

// aad binds a sealed value to its connection and field, so a ciphertext
// copied into another row (or the other field) does not open.
func aad(id, field string) []byte { return []byte("conn:" + id + ":" + field) }

func (b *Broker) seal(id, field, value string) ([]byte, error) {
	if value == "" {
		return nil, nil
	}
	return b.sealer.Seal([]byte(value), aad(id, field))
}

func (b *Broker) open(id, field string, sealed []byte) (string, error) {
	if len(sealed) == 0 {
		return "", nil
	}
	p, err := b.sealer.Open(sealed, aad(id, field))
	if err != nil {
		return "", fmt.Errorf("broker: connection %q: cannot decrypt %s token: %w", id, field, err)
	}
	return string(p), nil
}
