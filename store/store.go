package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
)

// Sentinel errors returned by every backend, matched with [errors.Is].
var (
	// ErrNotFound: no connection (or key) with that id.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists: a connection (or key) with that id exists.
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrConflict: a compare-and-swap lost: the row's version changed
	// since it was read.
	ErrConflict = errors.New("store: version conflict")
	// ErrLeaseHeld: another owner holds a live lease on the connection.
	ErrLeaseHeld = errors.New("store: lease held by another owner")
	// ErrUnavailable: the database could not be reached; nothing was
	// written. Callers answer 503 and try later.
	ErrUnavailable = errors.New("store: database unavailable")
)

// Status is a connection's lifecycle state; the rules that move it live in
// package lifecycle. Refreshing is not a status: the lease is.
type Status = lifecycle.Status

const (
	StatusActive      = lifecycle.StatusActive
	StatusNeedsReauth = lifecycle.StatusNeedsReauth
	StatusRevoked     = lifecycle.StatusRevoked
)

// Failure records why the last refresh failed.
type Failure = lifecycle.Failure

// Connection is one stored OAuth grant. AccessToken and RefreshToken hold
// sealed (encrypted) bytes; the store treats them as opaque.
type Connection struct {
	ID       string
	Provider string
	Status   Status

	// Incarnation identifies this life of the connection id: the store
	// assigns a new one on every create, so after a delete and a re-create
	// under the same id nothing bound to the old life (an in-flight
	// refresh, a cached token, an unsaved token, a lease) matches the new
	// row. CompareAndSwap compares it with the version.
	Incarnation string

	AccessToken  []byte // sealed; never plaintext
	RefreshToken []byte // sealed; nil when the grant has no refresh token
	TokenType    string
	Scope        string

	// IssuedAt is when the current access token was obtained: its lifetime
	// caps the refresh window (package lifecycle). Zero for rows written
	// before it was recorded.
	IssuedAt time.Time
	// OnErrorRefreshAt is when a caller's report of a failing token last
	// caused a refresh (the on-error budget, package lifecycle).
	OnErrorRefreshAt time.Time
	// RefreshStartedAt is set, under the lease, just before the refresh
	// token is sent to a provider that rotates it, and cleared by the write
	// of the answer or the failure: found set by the next lease holder, it
	// says the previous one stopped while the provider may have spent the
	// token. Zero otherwise.
	RefreshStartedAt time.Time
	// ExpiresAt is the access token's expiry; zero only when unknown and no
	// default applies.
	ExpiresAt time.Time
	// ExpiryDefaulted: ExpiresAt came from a default lifetime, not the
	// provider; the broker may learn the real one by introspection once.
	ExpiryDefaulted bool
	// RefreshExpiresAt is the refresh token's own expiry; zero if unknown.
	RefreshExpiresAt time.Time
	// RefreshHardExpiresAt is an absolute limit on the refresh chain.
	RefreshHardExpiresAt time.Time

	LastRefreshAt time.Time
	LastUsedAt    time.Time
	// NextRefreshAt is when the scheduler should next refresh this
	// connection (ahead of its refresh window, with jitter, or to keep an
	// idle refresh token alive); zero when there is nothing to schedule.
	// The broker computes it on every write; backends index it.
	NextRefreshAt time.Time
	Failure       *Failure // nil when healthy
	Metadata      json.RawMessage

	// Version is bumped by the store on every write. Update compares it.
	// The lease methods do not bump it: renewing a lease while a refresh
	// runs must not make that refresh's own compare-and-swap fail.
	Version int64

	// LeaseOwner and LeaseUntil describe the refresh lease; empty/zero when
	// free. Only the lease methods change them.
	LeaseOwner string
	LeaseUntil time.Time

	CreatedAt time.Time
	UpdatedAt time.Time

	// Grant is how the connection's access token is renewed: "" with its
	// refresh token (an imported or authorization-code grant), or
	// [GrantClientCredentials]: the broker asks the token endpoint for a new
	// token with the client's own credentials (RFC 6749 §4.4).
	Grant string

	// MCP is set on connections to MCP servers (Provider [ProviderMCP]):
	// which server, resource and authorization server the grant is for.
	MCP *MCP
}

// Event is a connection lifecycle event queued in the store's outbox. It
// carries codes, never tokens.
type Event struct {
	// ID identifies the event to receivers for deduplication; the store
	// assigns one when empty.
	ID           string
	Type         string // connection.created, .deleted, .refresh_failed, .reauth_required, .recovered
	ConnectionID string
	Provider     string
	Code         string // failure code, when there is one
	At           time.Time
}

// ListOptions filters and pages [Store.ListConnections].
type ListOptions struct {
	Provider string // "" for all
	Status   Status // "" for all
	// After is the id to start after (keyset pagination, ids ascending).
	After string
	// Limit caps the page; the store applies its own maximum and a default
	// when zero.
	Limit int
}

// Page sizes every backend applies to [ListOptions.Limit]: zero means
// DefaultListLimit, more than MaxListLimit means MaxListLimit, negative is
// an error.
const (
	DefaultListLimit = 100
	MaxListLimit     = 500
)

// Page is one page of connections. NextAfter is "" on the last page.
type Page struct {
	Connections []Connection
	NextAfter   string
}

// APIKey is a stored API key. Only the hash of the secret is kept.
type APIKey struct {
	ID    string
	Name  string
	Scope string // the role: "admin", "tokens", "proxy" or "connect"
	Hash  []byte // SHA-256 of the secret
	// Connections and Providers narrow the connections the key may touch
	// (docs/security.md): a connection is in scope when its id matches one
	// of Connections (a pattern with '*' wildcards) and its provider is one
	// of Providers. An empty list does not narrow.
	Connections []string
	Providers   []string
	CreatedAt   time.Time
	RevokedAt   time.Time // zero while the key is usable
}

// Store keeps connections and API keys. Every method takes a context first
// and is safe for concurrent use, across goroutines and, for backends that
// allow it, across processes.
//
// The writes of a connection take the lifecycle events they cause
// (connection.created, .recovered, …) as arguments: the backend queues them
// in its outbox in the same transaction as the write, so a crash can never
// record the change but lose its event.
type Store interface {
	// CreateConnection stores c with Version 1, a new Incarnation and
	// CreatedAt/UpdatedAt set by the store, and queues events. Returns
	// ErrAlreadyExists if the id is taken.
	CreateConnection(ctx context.Context, c Connection, events ...Event) (Connection, error)
	// BatchCreator: the bulk import's CreateConnections (batch.go).
	BatchCreator
	// GetConnection returns ErrNotFound if there is no such id.
	GetConnection(ctx context.Context, id string) (Connection, error)
	// UpdateConnection reads the row, calls update with it, and writes the
	// result, with the events update returns, only if the row's version is
	// still the one read, bumping it. update may return an error to abort
	// without writing. A lost race returns ErrConflict (see [Update] for the
	// retrying form); ErrNotFound if the row is gone. Lease fields are not
	// changed by UpdateConnection. update runs with no lock or transaction
	// held, so it may call the store itself.
	UpdateConnection(ctx context.Context, id string, update Updater) (Connection, error)
	// CompareAndSwap writes c, and queues events, if the stored row is still
	// c.Incarnation at c.Version, and returns the stored row with the
	// bumped version. Returns ErrConflict when the version moved on,
	// ErrNotFound when the row is gone or is another incarnation (deleted
	// and created again). Lease fields are not changed.
	CompareAndSwap(ctx context.Context, c Connection, events ...Event) (Connection, error)
	// DeleteConnection returns ErrNotFound if there is no such id. events
	// are queued in the same transaction as the delete.
	DeleteConnection(ctx context.Context, id string, events ...Event) error
	// ListConnections returns a page of connections ordered by id.
	ListConnections(ctx context.Context, opts ListOptions) (Page, error)

	// AcquireLease takes the refresh lease for owner until now+ttl if it is
	// free, expired, or already owner's (then it is extended). Returns the
	// row as of taking it, or ErrLeaseHeld (with the current row, so the
	// caller can see the holder's expiry) when someone else holds it.
	// Returns ErrNotFound if there is no such id.
	AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (Connection, error)
	// ReleaseLease frees the lease if owner holds it; a no-op otherwise,
	// also when there is no such id.
	ReleaseLease(ctx context.Context, id, owner string) error

	// CreateAPIKey stores k; a zero CreatedAt is set to the store's now.
	// Returns ErrAlreadyExists if the id or the hash is taken.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// GetAPIKeyByHash returns ErrNotFound for unknown or revoked keys.
	GetAPIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	ListAPIKeys(ctx context.Context) ([]APIKey, error)
	// RevokeAPIKey returns ErrNotFound if there is no such id. Revoking a
	// revoked key keeps its first RevokedAt.
	RevokeAPIKey(ctx context.Context, id string) error
	// CountAPIKeys counts keys that are not revoked.
	CountAPIKeys(ctx context.Context) (int, error)

	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}

// Backend is everything tokenbroker needs of a database, as one interface:
// a backend that lacks a role does not compile (var _ store.Backend =
// (*DB)(nil)) rather than silently lose a feature at run time. Only the
// change feed is optional ([ChangeFeed]): a database that one process owns
// has no other writers to hear about.
type Backend interface {
	Store
	ConnectSessions
	Scheduling
	Outbox
	ConnectionCounter
	MCPRegistrations
	SealedKeys
	AuditLog // audit.go
	Sessions // sessions.go
}

// SealedKeys tells which encryption keys the stored data needs, so that a
// server started with the wrong key file, or none, refuses to start rather
// than fail on every token (or seal new ones under a key the old data does
// not share). Sealed values name their key in a clear header (package
// seal): version byte 1, key id length n, then n bytes of key id.
type SealedKeys interface {
	// SealedKeyIDs counts the sealed values (connections' access and
	// refresh tokens, connect sessions' verifiers, MCP client secrets) per
	// key id. Values that are not shaped like sealed values are not
	// counted.
	SealedKeyIDs(ctx context.Context) (map[string]int64, error)
}

// ChangeHandler hears about connections written by any process.
type ChangeHandler interface {
	// ConnectionChanged: the connection with this id was created, updated
	// (its version moved) or deleted.
	ConnectionChanged(id string)
	// ChangesFollowed: from now on every change is delivered.
	ChangesFollowed()
	// ChangesLost: the feed was interrupted; changes may be missed until
	// the next ChangesFollowed.
	ChangesLost()
}

// ChangeFeed is implemented by backends shared by several processes that
// can tell each process about the others' writes (PostgreSQL: LISTEN/NOTIFY).
// It lets a process cache what it read without serving it after another
// replica replaced it.
type ChangeFeed interface {
	// FollowChanges delivers changes to h until ctx ends, reconnecting by
	// itself; it returns when ctx is done.
	FollowChanges(ctx context.Context, h ChangeHandler)
}

// CountedFailing is the status [ConnectionCounter] reports for active
// connections with a recorded [Failure]: they still serve their token but
// their refreshes are failing and backing off. They are not also counted as
// active, so the counts of one provider add up to its connections.
const CountedFailing = "failing"

// ConnectionGroup is one provider and status of [ConnectionCounter].
type ConnectionGroup struct {
	Provider string
	// Status is a [Status] or [CountedFailing].
	Status string
}

// ConnectionCounter counts connections for monitoring (the connections
// gauge of the metrics). Both backends implement it.
type ConnectionCounter interface {
	// CountConnections returns the number of connections per provider and
	// status; groups without connections are absent.
	CountConnections(ctx context.Context) (map[ConnectionGroup]int, error)
}

// GrantClientCredentials marks a [Connection] that holds a client-credentials
// token (RFC 6749 §4.4): it has no refresh token and is renewed by asking
// again.
const GrantClientCredentials = "client_credentials"

// ConnectSession is one pending authorization-code flow: the link an admin
// hands to the person who will grant access. Sessions are short-lived and
// single use.
type ConnectSession struct {
	// ID is random (at least 128 bits): holding it is the right to complete
	// the flow, so it is the capability in the connect link.
	ID           string
	ConnectionID string
	Provider     string
	// RedirectURL is where the browser goes when the flow ends; "" shows a
	// page instead.
	RedirectURL string
	// Scopes are requested on top of the provider's own.
	Scopes []string
	// MCP is set (and Provider is [ProviderMCP]) for a session that
	// connects an MCP server by its URL: the server, resource and issuer
	// discovered when the session was created.
	MCP *MCP
	// StateHash is the SHA-256 of the state parameter sent to the provider
	// when the link was opened; nil until then. Opening the link again
	// replaces it, so only the latest authorization request can complete.
	StateHash []byte
	// Verifier is the PKCE code verifier (RFC 7636 §4.1), sealed by the
	// caller; nil until the link is opened.
	Verifier  []byte
	ExpiresAt time.Time
	CreatedAt time.Time
}

// ConnectSessions keeps pending connect flows where every replica can see
// them: the callback may reach another replica than the one that started
// the flow. Both backends implement it.
type ConnectSessions interface {
	// CreateConnectSession stores s; a zero CreatedAt is set to the store's
	// now. Returns ErrAlreadyExists if the id is taken.
	CreateConnectSession(ctx context.Context, s ConnectSession) error
	// BeginConnectSession records the state hash and sealed verifier of a
	// new authorization request on session id, replacing earlier ones, and
	// returns the session. Returns ErrNotFound if there is no such session
	// (never created, consumed, or deleted as expired).
	BeginConnectSession(ctx context.Context, id string, stateHash, verifier []byte) (ConnectSession, error)
	// ConsumeConnectSession deletes the session whose state hash is
	// stateHash and returns it, atomically: of two concurrent calls one
	// gets the session and the other ErrNotFound. Expired sessions are
	// consumed too; the caller checks ExpiresAt.
	ConsumeConnectSession(ctx context.Context, stateHash []byte) (ConnectSession, error)
	// DeleteExpiredConnectSessions deletes sessions that expired before
	// now and returns how many.
	DeleteExpiredConnectSessions(ctx context.Context, now time.Time) (int, error)
}

// Claim is one due connection handed to a scheduler by
// [Scheduling.ClaimDue].
type Claim struct {
	ID       string
	Provider string
	// NextRefreshAt is when the connection became due; now minus it is how
	// late the scheduler is.
	NextRefreshAt time.Time
}

// Scheduling lets background schedulers, one per replica, share the
// connections that are due for a refresh without a coordinator. Both
// backends implement it.
type Scheduling interface {
	// ClaimDue claims up to limit active connections whose NextRefreshAt
	// is at or before now, oldest first, for owner until now+claimTTL, and
	// returns them. A claimed connection is not returned again, to any
	// owner, until its claim lapses; a write by the broker does not end the
	// claim, but it moves NextRefreshAt, which decides whether the
	// connection is due again. Concurrent callers never get the same
	// connection.
	ClaimDue(ctx context.Context, owner string, now time.Time, limit int, claimTTL time.Duration) ([]Claim, error)
	// ReleaseClaim ends owner's claim on connection id once its refresh is
	// done, so that it can be claimed again as soon as it is due (a token
	// shorter than the claim's TTL is due again before the claim would
	// lapse). A no-op when owner does not hold the claim, or there is no
	// such id.
	ReleaseClaim(ctx context.Context, owner, id string) error
	// OldestDue returns the earliest NextRefreshAt at or before now among
	// active connections, claimed or not; ok is false when none is due.
	OldestDue(ctx context.Context, now time.Time) (oldest time.Time, ok bool, err error)
}

// Delivery is one [Event] on its way to one webhook endpoint.
type Delivery struct {
	Event    Event
	Endpoint string
	// Attempt counts the claims of this delivery, this one included: 1 on
	// the first try. A claim whose owner died before acking counts too.
	Attempt int
}

// Outbox holds the events queued by connection writes ([Connection.Events],
// [Store.DeleteConnection]) until every webhook endpoint has them, and keeps
// them afterwards as each connection's recent history. Endpoints are
// configuration, not schema: an event becomes one delivery per endpoint
// when a dispatcher first claims it (fan-out), for the endpoints that
// dispatcher names. Both backends implement it.
type Outbox interface {
	// ClaimDeliveries fans events not yet fanned out to endpoints (each
	// endpoint gets the events that happened from when it was first named,
	// less EndpointStartSlack, or named again after EndpointGoneAfter
	// unnamed; not the history before), then
	// claims up to limit deliveries to those endpoints that are pending and
	// due at now, for owner until now+lease. Of concurrent claimers, in one
	// process or several, at most one gets a delivery while its claim lives;
	// a delivery whose claim lapses (its owner died) is due again. With no
	// endpoints it does nothing, so events wait to be fanned out.
	ClaimDeliveries(ctx context.Context, owner string, endpoints []string, now time.Time, limit int, lease time.Duration) ([]Delivery, error)
	// AckDelivery marks a delivery delivered, whoever holds its claim: the
	// receiver has the event. Acking twice is a no-op. Returns ErrNotFound
	// if there is no such delivery.
	AckDelivery(ctx context.Context, eventID, endpoint string) error
	// RetryDelivery records a failed attempt and makes the delivery due
	// again at next. Returns ErrConflict if owner no longer holds the claim
	// (another claimer took it over, or it was acked), ErrNotFound if there
	// is no such delivery.
	RetryDelivery(ctx context.Context, eventID, endpoint, owner string, next time.Time, lastError string) error
	// AbandonDelivery gives a delivery up: it is never tried again. Errors
	// as for RetryDelivery.
	AbandonDelivery(ctx context.Context, eventID, endpoint, owner, lastError string) error
	// OutboxBacklog counts deliveries neither delivered nor abandoned.
	OutboxBacklog(ctx context.Context) (int, error)
	// ConnectionEvents returns up to limit of the connection's most recent
	// events, newest first, also after the connection was deleted.
	ConnectionEvents(ctx context.Context, connectionID string, limit int) ([]Event, error)
	// PruneOutbox deletes the events that happened before before, with
	// their deliveries, and returns how many events it deleted.
	PruneOutbox(ctx context.Context, before time.Time) (int, error)
}

// NewEventID returns a new event id: "evt_", then at in unix milliseconds
// and 80 random bits, in fixed-width hex, so ids sort by time.
func NewEventID(at time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(at.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return "evt_" + hex.EncodeToString(b[:])
}

// NewIncarnation returns a new incarnation id for a connection being
// created: 128 random bits in hex.
func NewIncarnation() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Validate checks what every backend requires of a connect session before
// storing it.
func (cs ConnectSession) Validate() error {
	switch {
	case cs.ID == "":
		return errors.New("connect session id is empty")
	case cs.ConnectionID == "" || cs.Provider == "":
		return errors.New("connect session needs a connection id and a provider")
	case cs.ExpiresAt.IsZero():
		return errors.New("connect session has no expiry")
	}
	for _, sc := range cs.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n") {
			return fmt.Errorf("connect session scope %q is empty or contains white space", sc)
		}
	}
	return nil
}

// Bounds on the Outbox methods' work per call, shared by the backends.
const (
	// EndpointStartSlack is how far before it is first named an endpoint's
	// events begin, so that events written while the process that names
	// it was starting are not missed.
	EndpointStartSlack = time.Minute
	// EndpointGoneAfter: an endpoint not named by any claim for this long
	// was removed; when it is named again it starts afresh, from then on.
	EndpointGoneAfter = 7 * 24 * time.Hour
	// OutboxFanOutBatch caps the events one claim fans out, so a long
	// backlog (no dispatcher ran for a while) is worked through in steps
	// rather than in one long write transaction.
	OutboxFanOutBatch = 1000
	// MaxClaim caps ClaimDeliveries' limit.
	MaxClaim = 1000
	// DefaultEventsLimit and MaxEventsLimit apply to ConnectionEvents.
	DefaultEventsLimit = 50
	MaxEventsLimit     = 500
)

// EventsLimit applies ConnectionEvents' default and maximum to limit; a
// negative limit is an error.
func EventsLimit(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, fmt.Errorf("connection events: limit %d is negative", limit)
	case limit == 0:
		return DefaultEventsLimit, nil
	default:
		return min(limit, MaxEventsLimit), nil
	}
}
