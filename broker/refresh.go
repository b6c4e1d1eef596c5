package broker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/wait"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// Token is an access token handed to a caller.
type Token struct {
	AccessToken string
	TokenType   string
	ExpiresAt   time.Time // zero when unknown
	Scope       string
	// Provider names the connection's provider, so that a caller such as
	// the proxy needs no second lookup to route the call.
	Provider string
}

// GetToken returns a valid access token for the connection, refreshing it
// first when it is due (package lifecycle decides when).
//
// Errors: ErrNotFound; an *oauth.Error matching oauth.ErrReauthRequired
// when a person must reconnect; one matching oauth.ErrTransient (with
// RetryAfter) when the provider is failing and the token cannot be renewed
// yet; store.ErrUnavailable when the database cannot be reached.
func (b *Broker) GetToken(ctx context.Context, id string) (Token, error) {
	now := b.now()
	if t, ok := b.cache.get(id, now); ok {
		return t, nil
	}
	c, epoch, err := b.readConnection(ctx, id)
	if err != nil {
		return Token{}, err
	}
	p, err := b.provider(&c)
	if err != nil {
		return Token{}, err
	}
	g := grantOf(&c)
	if p.Policy.Serves(&g, lifecycle.OnDemand, false, now) {
		t, err := b.tokenOf(&c)
		if err == nil {
			b.cache.put(id, t, p.Policy.DueAt(c.IssuedAt, c.ExpiresAt), epoch)
		}
		return t, err
	}
	return b.refresh(ctx, id, lifecycle.OnDemand, nil)
}

// RefreshConnection refreshes the connection now. With stale set, it
// refreshes only if stale is still the connection's access token: a caller
// that saw a token fail gets the newer one if someone refreshed meanwhile.
// With stale nil the refresh is unconditional (an operator's "refresh now"),
// and it is attempted even during a transient failure's cooldown.
// Concurrent calls share one refresh.
func (b *Broker) RefreshConnection(ctx context.Context, id string, stale *string) (Token, error) {
	if stale == nil {
		return b.refresh(ctx, id, lifecycle.Forced, nil)
	}
	return b.refresh(ctx, id, lifecycle.Rejected, stale)
}

// RefreshIfDue refreshes the connection if it is due: its schedule says so,
// its token is due, or its refresh token must be used to stay alive. A
// connection cooling down after a failure, or needing re-authentication, is
// not refreshed; its error is returned. The scheduler calls this through
// the same single flight and lease as every other refresh.
func (b *Broker) RefreshIfDue(ctx context.Context, id string) error {
	_, err := b.refresh(ctx, id, lifecycle.Scheduled, nil)
	return err
}

func (b *Broker) provider(c *store.Connection) (Provider, error) {
	if c.MCP != nil {
		// An MCP connection's endpoint is its own: its registration and
		// resource (broker/mcp.go), looked up only when it is called.
		return b.mcpLazyProvider(c.MCP)
	}
	p, ok := b.providers[c.Provider]
	if !ok {
		// The provider was removed from the config after the connection was
		// stored: nothing can refresh it until it is configured again.
		return Provider{}, &oauth.Error{Op: "refresh", Code: "provider_not_configured", Kind: oauth.KindTransient,
			Description: "provider " + c.Provider + " is not configured"}
	}
	return p, nil
}

func (b *Broker) tokenOf(c *store.Connection) (Token, error) {
	access, err := b.open(c.ID, "access", c.AccessToken)
	if err != nil {
		return Token{}, err
	}
	return Token{AccessToken: access, TokenType: c.TokenType, ExpiresAt: c.ExpiresAt, Scope: c.Scope, Provider: c.Provider}, nil
}

// answered is the token a provider just issued for c, handed out when it
// could not be saved.
func answered(c *store.Connection, tok *oauth.Token) Token {
	return Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresAt: tok.Expiry, Scope: tok.Scope, Provider: c.Provider}
}

// refresh joins (or starts) the single flight for id and reason and waits
// for it with the caller's context. The flight itself runs detached with a
// timeout, so one caller giving up does not cancel it for the others.
func (b *Broker) refresh(ctx context.Context, id string, reason lifecycle.Reason, stale *string) (Token, error) {
	if reason == lifecycle.Rejected && !b.hasUnsaved(id) {
		// Most rejections are answered by the current row: someone already
		// refreshed, or the token is too young to be refreshed again
		// (lifecycle's on-error interval). Neither needs a flight or a lease.
		if c, err := b.store.GetConnection(ctx, id); err == nil {
			if p, err := b.provider(&c); err == nil && b.serves(&c, p, reason, stale, b.now()) {
				return b.tokenOf(&c)
			}
		}
	}
	// Each reason has its own flight, because an on-demand flight may
	// decide that no refresh is needed where a forced one must refresh.
	// They all meet at the store's lease, so only one reaches the provider
	// at a time.
	key := id + "\x00" + strconv.Itoa(int(reason))
	ch := b.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout+b.leaseTTL)
		defer cancel()
		return b.tracedFlight(fctx, id, reason, stale) // tracing.go: refreshFlight in a span
	})
	select {
	case <-ctx.Done():
		return Token{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	}
}

// serves reports whether row c's current token answers a flight for reason
// without a refresh (lifecycle.Policy.Serves).
func (b *Broker) serves(c *store.Connection, p Provider, reason lifecycle.Reason, stale *string, now time.Time) bool {
	g := grantOf(c)
	return p.Policy.Serves(&g, reason, b.isStale(c, stale), now)
}

// refreshFlight runs steps 3-8 of the refresh algorithm for one connection
// (docs/architecture.md).
func (b *Broker) refreshFlight(ctx context.Context, id string, reason lifecycle.Reason, stale *string) (Token, error) {
	owner := b.flightOwner()
	c, l, err := b.acquireLease(ctx, id, owner, reason, stale)
	if err != nil {
		return Token{}, err
	}
	if l == nil {
		// Someone else refreshed while we waited; hand out their token.
		return b.tokenOf(c)
	}
	defer b.releaseLease(id, owner)

	p, err := b.provider(c)
	if err != nil {
		return Token{}, err
	}
	now := b.now()

	// A token the provider issued earlier but that could not be saved comes
	// first: its refresh token is the live one. It belongs to this life of
	// the connection only.
	if tok := b.takeUnsaved(id, c.Incarnation); tok != nil {
		saved, err := b.saveRenewed(ctx, c, p, tok, now, lifecycle.Refreshed)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				b.keepUnsaved(id, c.Incarnation, tok)
			}
			return Token{}, err
		}
		c = &saved
	}

	// Step 4: re-read under the lease; someone may have refreshed meanwhile.
	if b.serves(c, p, reason, stale, now) {
		return b.tokenOf(c)
	}
	g := grantOf(c)
	if err := lifecycle.ErrorOf(&g, now); err != nil {
		switch {
		case reason == lifecycle.Forced && lifecycle.PersonMayRetry(&g):
			// A refresh whose outcome was unknown: a person says it is safe
			// to send the refresh token again.
		case oauth.Terminal(err):
			return Token{}, err
		case reason == lifecycle.Forced:
			// An operator's "refresh now" is the way to end a cooldown early.
		case lifecycle.ServesWhileFailing(&g, reason, now):
			// In a cooldown, a token that is still valid is served rather
			// than failing a caller the provider would have accepted.
			return b.tokenOf(c)
		default:
			return Token{}, err
		}
	}

	// Client-credentials connections (broker/connect.go) hold no refresh
	// token: under this same lease they are renewed by asking the token
	// endpoint again with the client's credentials (RFC 6749 §4.4).
	if c.Grant == store.GrantClientCredentials {
		return b.renewClientCredentials(ctx, c, p, l, renewedBy(reason))
	}
	refreshToken, err := b.open(id, "refresh", c.RefreshToken)
	if err != nil {
		return Token{}, err
	}
	if refreshToken == "" || !lifecycle.CanRefresh(&g, now) {
		// Nothing to refresh with. An access token that still works is
		// served until it expires; then a person must reconnect.
		if lifecycle.ServesWhileFailing(&g, reason, now) {
			return b.tokenOf(c)
		}
		return Token{}, b.recordFailure(ctx, c, p, lifecycle.NoRefreshError(&g))
	}

	// A refresh a previous lease holder started and never finished (its
	// process stopped while the provider answered) may have spent the
	// refresh token: at a provider that revokes a used one, sending it
	// again may revoke the grant, so a person must decide.
	if !c.RefreshStartedAt.IsZero() && !p.Policy.MaySendAgain(c.RefreshStartedAt, now) {
		lost := &oauth.Error{Op: "refresh", Code: oauth.CodeNetwork, Kind: oauth.KindTransient, OutcomeUnknown: true,
			Description: "an earlier refresh of this connection, started " + c.RefreshStartedAt.UTC().Format(time.RFC3339) +
				", never finished: its process stopped while the provider may have answered"}
		return Token{}, b.recordFailure(ctx, c, p, lost, refreshToken)
	}
	if p.Policy.MarksRefreshes() {
		marked, err := b.markStarted(ctx, c, b.now())
		if err != nil {
			return Token{}, err
		}
		c = marked
	}

	// Step 5: call the provider, renewing the lease while it works.
	tok, err := b.callProvider(ctx, c, p, l, func(ctx context.Context) (*oauth.Token, error) {
		return p.Endpoint.Refresh(ctx, refreshToken)
	})
	if errors.Is(err, errRateLimited) {
		return Token{}, err // nothing was sent: not the connection's failure
	}
	if err != nil {
		return Token{}, b.recordFailure(ctx, c, p, err, refreshToken)
	}

	// Step 6: save first.
	saved, err := b.saveRenewed(ctx, c, p, tok, b.now(), renewedBy(reason))
	switch {
	case errors.Is(err, store.ErrNotFound):
		// The connection was deleted (and perhaps created again) while the
		// provider answered: the grant went with it, and its token must
		// never reach a caller of whatever holds the id now.
		b.log.WarnContext(ctx, "connection was deleted during its refresh; the new token is discarded",
			"connection", id, "provider", c.Provider)
		return Token{}, err
	case err != nil:
		// The provider has answered and, at a rotating provider, spent the
		// old refresh token. Keep the new token in memory and hand it out;
		// the next flight for this life of the connection saves it before
		// anything else.
		b.keepUnsaved(id, c.Incarnation, tok)
		b.log.ErrorContext(ctx, "refreshed token could not be saved; kept in memory and will be saved before the next refresh",
			"connection", id, "provider", c.Provider, "error", err)
		return answered(c, tok), nil
	}
	saved = b.learnExpiry(ctx, saved, p, tok.AccessToken)
	return b.tokenOf(&saved)
}

// markStarted records, under the lease, that a refresh of c is about to
// send its refresh token (store.Connection.RefreshStartedAt), and returns
// the row written. The write of the answer or of the failure clears it.
func (b *Broker) markStarted(ctx context.Context, c *store.Connection, now time.Time) (*store.Connection, error) {
	marked, err := store.UpdateFrom(ctx, b.store, *c, func(old store.Connection) (store.Connection, []Event, error) {
		if old.Incarnation != c.Incarnation {
			return old, nil, store.ErrNotFound
		}
		if !bytes.Equal(old.RefreshToken, c.RefreshToken) {
			// Written by someone else under our lease: it lapsed. Leave it.
			return old, nil, &oauth.Error{Op: "refresh", Code: "lease_lost", Kind: oauth.KindTransient,
				Description: "the connection's tokens changed while this refresh held its lease; try again", RetryAfter: time.Second}
		}
		old.RefreshStartedAt = now
		return old, nil, nil
	})
	if err != nil {
		return nil, err
	}
	return &marked, nil
}

// callProvider runs one call to the provider's token endpoint for c under
// the flight's lease l: after the provider's token-endpoint rate limit
// allows it, fenced by the lease (fencedContext) and renewing it meanwhile,
// and reported to the metrics.
func (b *Broker) callProvider(ctx context.Context, c *store.Connection, p Provider, l *lease,
	call func(context.Context) (*oauth.Token, error)) (*oauth.Token, error) {
	callCtx, cancel := b.fencedContext(ctx, l)
	defer cancel()
	if err := b.waitTurn(callCtx, p); err != nil {
		return nil, err
	}
	stopRenew := b.renewLease(ctx, l)
	started := time.Now()
	tok, err := call(callCtx)
	stopRenew()
	b.metrics.RefreshFinished(p.Name, outcome(p.Policy.Classify(err)), time.Since(started))
	return tok, err
}

// errRateLimited is wrapped by the error of a refresh that the provider's
// token-endpoint rate limit did not let through in time.
var errRateLimited = errors.New("broker: token endpoint rate limit")

// waitTurn waits for the provider's token-endpoint rate limit, which every
// refresh path shares (on demand, scheduled, after a rejection, forced).
// When the wait would outlast ctx, it fails at once with a transient error
// carrying the wait as RetryAfter.
func (b *Broker) waitTurn(ctx context.Context, p Provider) error {
	lim := b.limits[p.Name]
	if lim == nil {
		return nil
	}
	r := lim.Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		r.Cancel()
		return &oauth.Error{Op: "refresh", Code: "rate_limited", Kind: oauth.KindTransient, RetryAfter: d,
			Description: "the provider's token endpoint rate limit allows no refresh now", Err: errRateLimited}
	}
	if err := wait.Sleep(ctx, d); err != nil {
		r.Cancel()
		return &oauth.Error{Op: "refresh", Code: "rate_limited", Kind: oauth.KindTransient, RetryAfter: d,
			Description: "gave up waiting for the provider's token endpoint rate limit", Err: errors.Join(errRateLimited, err)}
	}
	return nil
}

// renewedBy is the origin of a token renewed for reason: a caller's report
// of a failing token spends the on-error budget.
func renewedBy(reason lifecycle.Reason) lifecycle.Origin {
	if reason == lifecycle.Rejected {
		return lifecycle.RefreshedOnError
	}
	return lifecycle.Refreshed
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "success"
	case oauth.Terminal(err):
		return "terminal"
	default:
		return "transient"
	}
}

// isStale reports whether the connection's current access token is the one
// the caller saw fail.
func (b *Broker) isStale(c *store.Connection, stale *string) bool {
	if stale == nil {
		return false
	}
	cur, err := b.open(c.ID, "access", c.AccessToken)
	if err != nil {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(cur), []byte(*stale)) == 1
}

// saveRenewed writes a token the provider just issued by renewing c (a
// refresh, or client credentials asked again), by store.Update on the row's
// incarnation. If the row moved on since c was read under the lease, what
// moved decides: when only bookkeeping
// changed (a failure record written by a replica whose refresh lost, an
// edit of metadata), the token is applied to the newer row; when the tokens
// themselves changed, another refresh finished first (our lease lapsed),
// and a refresh that started from an old snapshot must not overwrite a
// newer one — the stored row wins and is returned instead. ErrNotFound
// means the connection was deleted, or is another incarnation now.
func (b *Broker) saveRenewed(ctx context.Context, c *store.Connection, p Provider, tok *oauth.Token, now time.Time, origin lifecycle.Origin) (store.Connection, error) {
	oldAccess, _ := b.open(c.ID, "access", c.AccessToken)
	oldRefresh, _ := b.open(c.ID, "refresh", c.RefreshToken)
	var (
		events []Event
		newer  store.Connection
	)
	saved, err := store.UpdateFrom(ctx, b.store, *c, func(row store.Connection) (store.Connection, []Event, error) {
		if row.Incarnation != c.Incarnation {
			return row, nil, store.ErrNotFound
		}
		if row.Version != c.Version {
			access, aerr := b.open(row.ID, "access", row.AccessToken)
			refresh, rerr := b.open(row.ID, "refresh", row.RefreshToken)
			if aerr != nil || rerr != nil || access != oldAccess || refresh != oldRefresh {
				newer = row
				return row, nil, errNewerToken
			}
		}
		next, err := b.land(row, origin, tok, p, now)
		next.RefreshStartedAt = time.Time{}
		events = nil
		if g := grantOf(&row); g.Failing() {
			events = []Event{b.event(EventRecovered, &next, "")}
		}
		return next, events, err
	})
	if errors.Is(err, errNewerToken) {
		b.log.WarnContext(ctx, "a newer token was saved while this refresh ran; keeping the newer one",
			"connection", c.ID, "provider", c.Provider, "version", newer.Version)
		return newer, nil
	}
	if err != nil {
		return store.Connection{}, err
	}
	b.written(c.ID)
	b.log.InfoContext(ctx, "token refreshed", "connection", c.ID, "provider", c.Provider,
		"rotated", tok.RefreshToken != "" && tok.RefreshToken != oldRefresh, "expires_at", saved.ExpiresAt)
	b.emit(ctx, events)
	return saved, nil
}

// errNewerToken aborts saveRenewed's write: another refresh saved a newer
// token first.
var errNewerToken = errors.New("broker: a newer token was saved meanwhile")

// learnExpiry asks the provider, once, for the real expiry of a token saved
// with a default one (RFC 7662) and lands it in the row, which reschedules
// the next refresh. saved is returned unchanged when the provider cannot
// say or the row moved on.
func (b *Broker) learnExpiry(ctx context.Context, saved store.Connection, p Provider, access string) store.Connection {
	if !saved.ExpiryDefaulted || !p.CanIntrospect {
		return saved
	}
	exp, ok := b.introspectExpiry(ctx, p, access)
	if !ok {
		return saved
	}
	upd, err := b.store.UpdateConnection(ctx, saved.ID, func(old store.Connection) (store.Connection, []Event, error) {
		if old.Incarnation != saved.Incarnation || old.Version != saved.Version {
			return old, nil, store.ErrConflict // a newer token; its expiry is not ours to set
		}
		next, err := b.land(old, lifecycle.Introspected, &oauth.Token{Expiry: exp}, p, b.now())
		return next, nil, err
	})
	b.written(saved.ID)
	if err != nil {
		return saved
	}
	return upd
}

// recordFailure stores why a renewal of c failed and when to try again
// (lifecycle.Fail), and returns the error as the provider's policy
// classifies it. A terminal failure marks the connection needs_reauth,
// after which the provider is not called for it again until it is
// reconnected; so do transient failures that have lasted longer than the
// policy's GiveUpAfter.
//
// The provider's error text is kept for admins, with every token value of
// the connection scrubbed from it: some providers echo the refresh token
// they refused. secrets are values the caller holds in plaintext already
// (the refresh token it sent); the stored ones are opened here.
func (b *Broker) recordFailure(ctx context.Context, c *store.Connection, p Provider, cause error, secrets ...string) error {
	classified := p.Policy.Classify(cause)
	if access, err := b.open(c.ID, "access", c.AccessToken); err == nil {
		secrets = append(secrets, access)
	}
	if refresh, err := b.open(c.ID, "refresh", c.RefreshToken); err == nil {
		secrets = append(secrets, refresh)
	}
	var queued []Event
	updated, err := store.Update(ctx, b.store, c.ID, func(old store.Connection) (store.Connection, []Event, error) {
		if old.Incarnation != c.Incarnation {
			return old, nil, store.ErrNotFound // deleted and created again: not this grant's failure
		}
		next, events, cerr := b.failed(old, cause, p, b.now())
		next.RefreshStartedAt = time.Time{}
		if next.Failure != nil {
			f := *next.Failure
			f.Message = oauth.Scrub(f.Message, secrets...)
			next.Failure = &f
		}
		classified, queued = cerr, events
		return next, events, nil
	})
	b.written(c.ID)
	if err != nil {
		b.log.ErrorContext(ctx, "could not record refresh failure", "connection", c.ID, "error", err)
		return classified
	}
	b.log.WarnContext(ctx, "refresh failed", "connection", c.ID, "provider", c.Provider, "code", updated.Failure.Code,
		"terminal", oauth.Terminal(classified), "attempts", updated.Failure.Attempts, "status", updated.Status)
	b.emit(ctx, queued)
	return classified
}

// unsavedToken is a token the provider issued for one life of a connection
// that could not be saved yet.
type unsavedToken struct {
	incarnation string
	tok         *oauth.Token
}

// takeUnsaved returns and forgets the unsaved token of this incarnation of
// id. One of another incarnation (the connection was deleted and created
// again meanwhile) is dropped: its grant went with the deleted connection.
func (b *Broker) takeUnsaved(id, incarnation string) *oauth.Token {
	b.unsavedMu.Lock()
	defer b.unsavedMu.Unlock()
	u, ok := b.unsaved[id]
	delete(b.unsaved, id)
	if !ok || u.incarnation != incarnation {
		return nil
	}
	return u.tok
}

// hasUnsaved reports whether a token the provider issued for id waits to
// be saved: then the stored row is not the newest word on id's tokens.
func (b *Broker) hasUnsaved(id string) bool {
	b.unsavedMu.Lock()
	defer b.unsavedMu.Unlock()
	_, ok := b.unsaved[id]
	return ok
}

func (b *Broker) keepUnsaved(id, incarnation string, t *oauth.Token) {
	b.written(id)
	b.unsavedMu.Lock()
	b.unsaved[id] = unsavedToken{incarnation: incarnation, tok: t}
	b.unsavedMu.Unlock()
}

func (b *Broker) forgetUnsaved(id string) {
	b.unsavedMu.Lock()
	delete(b.unsaved, id)
	b.unsavedMu.Unlock()
}
