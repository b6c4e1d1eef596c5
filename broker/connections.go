package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

func defaultRand() float64 { return rand.Float64() }

// ValidationError says which field of a request was wrong. Nothing is
// stored when one is returned.
type ValidationError struct {
	Field   string
	Problem string
}

func (e *ValidationError) Error() string { return "broker: " + e.Field + ": " + e.Problem }

// ErrNotFound is returned for an unknown connection id.
var ErrNotFound = store.ErrNotFound

// ErrAlreadyExists is returned when importing an id that is taken.
var ErrAlreadyExists = store.ErrAlreadyExists

// maxTokenLen bounds imported token values: real ones are at most a few KiB
// (JWTs with many claims); anything larger is a mistake or an attack.
const maxTokenLen = 16 << 10

// ValidID reports whether id is acceptable as a connection id: 1-200
// characters of letters, digits and . _ : @ -, starting with a letter or
// digit, so ids are safe in URLs and logs. That is the regular expression
// ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$ (TestValidIDMatchesPattern), written
// as a loop because every token read and proxied call checks an id and
// the regexp was about 2% of a token read's CPU (BENCHMARKS.md).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == ':' || c == '@' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// maxIDLen is the longest connection id.
const maxIDLen = 200

// Import is a connection obtained elsewhere, handed to the broker.
type Import struct {
	ID           string
	Provider     string
	AccessToken  string
	RefreshToken string
	TokenType    string
	Scope        string
	// ExpiresIn or ExpiresAt give the access token's expiry; neither means
	// the provider's default lifetime applies.
	ExpiresIn time.Duration
	ExpiresAt time.Time
	// IssuedAt is when the provider issued the access token, if the
	// importer knows; zero means now. With ExpiresAt it gives the token's
	// lifetime, which caps its refresh window (package lifecycle).
	IssuedAt              time.Time
	RefreshTokenExpiresAt time.Time
	Metadata              json.RawMessage
}

func (b *Broker) validateImport(in *Import) (Provider, error) {
	if !ValidID(in.ID) {
		return Provider{}, &ValidationError{"id", "must be 1-200 characters of letters, digits and . _ : @ -, starting with a letter or digit"}
	}
	p, ok := b.providers[in.Provider]
	if in.Provider == "" {
		return Provider{}, &ValidationError{"provider", "is required"}
	}
	if !ok {
		return Provider{}, b.unknownProvider(in.Provider)
	}
	if in.AccessToken == "" {
		return Provider{}, &ValidationError{"access_token", "is required"}
	}
	if len(in.AccessToken) > maxTokenLen {
		return Provider{}, &ValidationError{"access_token", "is longer than 16 KiB"}
	}
	if len(in.RefreshToken) > maxTokenLen {
		return Provider{}, &ValidationError{"refresh_token", "is longer than 16 KiB"}
	}
	if in.ExpiresIn < 0 {
		return Provider{}, &ValidationError{"expires_in", "must not be negative"}
	}
	if in.ExpiresIn > 0 && !in.ExpiresAt.IsZero() {
		return Provider{}, &ValidationError{"expires_at", "give expires_in or expires_at, not both"}
	}
	if !in.IssuedAt.IsZero() && in.IssuedAt.After(b.now().Add(time.Minute)) {
		return Provider{}, &ValidationError{"issued_at", "is in the future"}
	}
	if !in.IssuedAt.IsZero() && !in.ExpiresAt.IsZero() && !in.ExpiresAt.After(in.IssuedAt) {
		return Provider{}, &ValidationError{"issued_at", "must be before expires_at"}
	}
	if len(in.Metadata) > 0 && !json.Valid(in.Metadata) {
		return Provider{}, &ValidationError{"metadata", "is not valid JSON"}
	}
	if len(in.Metadata) > 64<<10 {
		return Provider{}, &ValidationError{"metadata", "is larger than 64 KiB"}
	}
	return p, nil
}

// CreateConnection stores an imported connection. Returns a
// *ValidationError for bad input and ErrAlreadyExists when the id is taken;
// nothing is stored in either case.
func (b *Broker) CreateConnection(ctx context.Context, in Import) (store.Connection, error) {
	c, created, err := b.imported(ctx, &in, b.now())
	if err != nil {
		return store.Connection{}, err
	}
	saved, err := b.store.CreateConnection(ctx, c, created)
	if err != nil {
		return store.Connection{}, err
	}
	b.log.InfoContext(ctx, "connection created", "connection", c.ID, "provider", c.Provider)
	b.emit(ctx, []Event{created})
	return saved, nil
}

// imported validates in and makes the row it creates, with the
// connection.created event to queue with it: the one path of the single and
// the batch import.
func (b *Broker) imported(ctx context.Context, in *Import, now time.Time) (store.Connection, Event, error) {
	p, err := b.validateImport(in)
	if err != nil {
		return store.Connection{}, Event{}, err
	}
	tok := in.token(now)
	c, err := b.land(store.Connection{ID: in.ID, Provider: in.Provider, Metadata: in.Metadata}, lifecycle.Granted, tok, p, now)
	if err != nil {
		return store.Connection{}, Event{}, err
	}
	if c.ExpiryDefaulted && p.CanIntrospect {
		// Learn the real expiry once, now, rather than on every call.
		if exp, ok := b.introspectExpiry(ctx, p, in.AccessToken); ok {
			if c, err = b.land(c, lifecycle.Introspected, &oauth.Token{Expiry: exp}, p, now); err != nil {
				return store.Connection{}, Event{}, err
			}
		}
	}
	return c, b.event(EventCreated, &c, ""), nil
}

// CreateConnections stores imported connections all together or not at
// all (docs/operations.md, "Importing many connections"): each is
// validated and landed as [Broker.CreateConnection] does, then the batch
// is written in one transaction. A bad or taken item fails the whole batch with a
// *store.ItemError naming it, wrapping its *ValidationError or
// ErrAlreadyExists; nothing is stored then. More than store.MaxBatch
// imports is a *ValidationError.
func (b *Broker) CreateConnections(ctx context.Context, ins []Import) error {
	if len(ins) > store.MaxBatch {
		return &ValidationError{"connections", fmt.Sprintf("a batch holds at most %d connections, not %d", store.MaxBatch, len(ins))}
	}
	now := b.now()
	cs := make([]store.Connection, len(ins))
	events := make([]Event, len(ins))
	first := make(map[string]int, len(ins))
	for i := range ins {
		if j, ok := first[ins[i].ID]; ok {
			return &store.ItemError{Index: i, ID: ins[i].ID, Err: &ValidationError{"id", fmt.Sprintf("repeats the id of item %d", j)}}
		}
		first[ins[i].ID] = i
		c, e, err := b.imported(ctx, &ins[i], now)
		if err != nil {
			return &store.ItemError{Index: i, ID: ins[i].ID, Err: err}
		}
		cs[i], events[i] = c, e
	}
	if err := b.store.CreateConnections(ctx, cs, events); err != nil {
		return err
	}
	b.log.InfoContext(ctx, "connections created", "count", len(cs))
	b.emit(ctx, events)
	return nil
}

// token is the imported grant as a token response received at now.
func (in *Import) token(now time.Time) *oauth.Token {
	tok := &oauth.Token{
		AccessToken: in.AccessToken, RefreshToken: in.RefreshToken, TokenType: in.TokenType, Scope: in.Scope,
		RefreshExpiry: in.RefreshTokenExpiresAt, IssuedAt: now,
	}
	if !in.IssuedAt.IsZero() {
		tok.IssuedAt = in.IssuedAt
	}
	switch {
	case in.ExpiresIn > 0:
		tok.Expiry = now.Add(in.ExpiresIn)
	case !in.ExpiresAt.IsZero():
		tok.Expiry = in.ExpiresAt
	}
	return tok
}

// ReimportConnection creates the connection, or replaces the tokens of the
// existing one with tokens obtained elsewhere: the import form of
// reconnecting. A replaced connection is active again with its failure
// cleared, and connection.recovered is emitted when it was failing; its
// metadata is replaced only when in carries some. created reports whether
// the connection was new. Returns a *ValidationError for bad input and an
// error wrapping ErrProviderMismatch when id belongs to another provider;
// nothing is written in either case.
func (b *Broker) ReimportConnection(ctx context.Context, in Import) (c store.Connection, created bool, err error) {
	if _, err := b.validateImport(&in); err != nil {
		return store.Connection{}, false, err
	}
	c, replaced, err := b.saveGrant(ctx, in.ID, in.Provider, "", in.token(b.now()), in.Metadata, false, nil)
	return c, !replaced, err
}

// introspectExpiry asks the provider when an access token expires (RFC
// 7662). It is called once per token whose lifetime the provider did not
// state, never on the request path of a valid token.
func (b *Broker) introspectExpiry(ctx context.Context, p Provider, access string) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	in, err := p.Endpoint.Introspect(ctx, access, "access_token")
	if err != nil {
		b.log.WarnContext(ctx, "introspection failed; keeping the default lifetime", "provider", p.Name, "error", err)
		return time.Time{}, false
	}
	if !in.Active || in.Exp.IsZero() {
		return time.Time{}, false
	}
	return in.Exp, true
}

// GetConnection returns the stored connection (tokens still sealed).
func (b *Broker) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	return b.store.GetConnection(ctx, id)
}

// ListConnections pages through connections.
func (b *Broker) ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error) {
	if opts.Status != "" && !opts.Status.Valid() {
		return store.Page{}, &ValidationError{"status", fmt.Sprintf("unknown status %q", opts.Status)}
	}
	return b.store.ListConnections(ctx, opts)
}

// DeleteConnection deletes a connection, first revoking its tokens at the
// provider where it has a revocation endpoint (RFC 7009). A failed
// revocation does not stop the delete; it is returned as revokeErr so the
// caller can report it.
//
// The delete takes the connection's refresh lease first, waiting for a
// refresh in flight (on any replica) to finish and save: otherwise that
// refresh's new tokens would outlive the connection at the provider,
// unrevoked, and nothing of them may reach whatever is created under the
// id next. A refresh that starts after the delete took the lease finds the
// connection gone.
func (b *Broker) DeleteConnection(ctx context.Context, id string) (revokeErr error, err error) {
	owner := b.flightOwner()
	cp, _, err := b.takeLease(ctx, id, owner, nil)
	if err != nil {
		return nil, err
	}
	defer b.releaseLease(id, owner) // a no-op once the row is gone, unless the delete failed
	c := *cp
	// b.provider: an MCP connection revokes at its own issuer.
	if p, err := b.provider(&c); err == nil && p.CanRevoke {
		revokeErr = b.revoke(ctx, p, &c)
	}
	deleted := []Event{b.event(EventDeleted, &c, "")}
	b.written(id)
	if err := b.store.DeleteConnection(ctx, id, deleted...); err != nil {
		return revokeErr, err
	}
	b.written(id)
	b.forgetUnsaved(id)
	b.log.InfoContext(ctx, "connection deleted", "connection", id, "provider", c.Provider)
	b.emit(ctx, deleted)
	return revokeErr, nil
}

func (b *Broker) revoke(ctx context.Context, p Provider, c *store.Connection) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Revoking the refresh token revokes the grant (RFC 7009 §2.1); the
	// access token alone where there is no refresh token.
	token, hint, field := c.RefreshToken, "refresh_token", "refresh"
	if len(token) == 0 {
		token, hint, field = c.AccessToken, "access_token", "access"
	}
	plain, err := b.open(c.ID, field, token)
	if err != nil {
		return err
	}
	if err := p.Endpoint.Revoke(ctx, plain, hint); err != nil {
		b.log.WarnContext(ctx, "revocation failed; deleting locally anyway", "connection", c.ID, "provider", c.Provider, "error", err)
		return err
	}
	return nil
}

// IsValidation reports whether err is a *ValidationError.
func IsValidation(err error) bool {
	var v *ValidationError
	return errors.As(err, &v)
}
