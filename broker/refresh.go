package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
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
// first when it is inside the provider's refresh window.
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
	epoch := b.cache.begin()
	c, err := b.store.GetConnection(ctx, id)
	if err != nil {
		return Token{}, err
	}
	p, err := b.provider(&c)
	if err != nil {
		return Token{}, err
	}
	if c.Status == store.StatusActive && usable(&c, now, p.RefreshWindow) {
		t, err := b.tokenOf(&c)
		if err == nil {
			b.cache.put(id, t, p.RefreshWindow, epoch)
		}
		return t, err
	}
	return b.refresh(ctx, id, onDemand, nil)
}

// RefreshConnection refreshes the connection now. With stale set, it
// refreshes only if stale is still the connection's access token: a caller
// that saw a token fail gets the newer one if someone refreshed meanwhile.
// With stale nil the refresh is unconditional (an operator's "refresh now"),
// and it is attempted even during a transient failure's cooldown.
// Concurrent calls share one refresh.
func (b *Broker) RefreshConnection(ctx context.Context, id string, stale *string) (Token, error) {
	if stale == nil {
		return b.refresh(ctx, id, forced, nil)
	}
	return b.refresh(ctx, id, ifStale, stale)
}

// refreshMode says why a flight runs, which decides when it may hand out
// the current token instead of calling the provider.
type refreshMode int

const (
	onDemand  refreshMode = iota // the token is inside its refresh window
	ifStale                      // a caller saw this token fail
	forced                       // an operator asked for a refresh
	scheduled                    // the scheduler found the connection due
)

// RefreshIfDue refreshes the connection if it is due: its token is inside
// the refresh window, or its refresh token must be used to stay alive
// (RefreshIdleTimeout). A connection cooling down after a failure, or
// needing re-authentication, is not refreshed; its error is returned. The
// scheduler calls this through the same single flight and lease as every
// other refresh.
func (b *Broker) RefreshIfDue(ctx context.Context, id string) error {
	_, err := b.refresh(ctx, id, scheduled, nil)
	return err
}

// nextRefreshAt is when the scheduler should refresh c: a jittered moment
// before its refresh window opens, so tokens issued together are not all
// refreshed in the same second, or before its refresh token would die of
// disuse, whichever comes first. Zero when nothing is to be scheduled.
func (b *Broker) nextRefreshAt(c *store.Connection, p Provider) time.Time {
	if c.Status != store.StatusActive {
		return time.Time{}
	}
	var next time.Time
	if !c.ExpiresAt.IsZero() {
		jitter := time.Duration(b.rand() * float64(p.RefreshWindow) / 2)
		next = c.ExpiresAt.Add(-p.RefreshWindow - jitter)
	}
	if p.RefreshIdleTimeout > 0 && len(c.RefreshToken) > 0 {
		last := c.LastRefreshAt
		if last.IsZero() {
			last = c.CreatedAt
		}
		if last.IsZero() {
			last = b.now()
		}
		// Use the refresh token with a tenth of its idle life to spare.
		keepAlive := last.Add(p.RefreshIdleTimeout - p.RefreshIdleTimeout/10)
		if next.IsZero() || keepAlive.Before(next) {
			next = keepAlive
		}
	}
	if f := c.Failure; f != nil && next.Before(f.NextAttemptAt) {
		next = f.NextAttemptAt
	}
	return next
}

// ExpiringSoonWithin is how far ahead a refresh token's end is reported.
const ExpiringSoonWithin = 14 * 24 * time.Hour

// RefreshExpiringSoon reports whether c's refresh token (or its chain's hard
// limit, such as Intuit's x_refresh_token_hard_expires_in) ends within
// ExpiringSoonWithin of now. Refreshing does not help past a hard limit, so
// this is a warning for a person: the user will have to reconnect.
func RefreshExpiringSoon(c *store.Connection, now time.Time) bool {
	if c.Status != store.StatusActive || len(c.RefreshToken) == 0 {
		return false
	}
	for _, end := range []time.Time{c.RefreshExpiresAt, c.RefreshHardExpiresAt} {
		if !end.IsZero() && end.After(now) && end.Sub(now) <= ExpiringSoonWithin {
			return true
		}
	}
	return false
}

// keepAliveDue reports whether c's refresh token should be used now to
// keep it from dying of disuse.
func keepAliveDue(c *store.Connection, p Provider, now time.Time) bool {
	if p.RefreshIdleTimeout <= 0 || len(c.RefreshToken) == 0 {
		return false
	}
	last := c.LastRefreshAt
	if last.IsZero() {
		last = c.CreatedAt
	}
	return !now.Before(last.Add(p.RefreshIdleTimeout - p.RefreshIdleTimeout/10))
}

// usable reports whether the stored access token can be handed out without
// a refresh: present and not within window of its expiry. Unknown expiry is
// usable until the provider says otherwise.
func usable(c *store.Connection, now time.Time, window time.Duration) bool {
	if len(c.AccessToken) == 0 {
		return false
	}
	return c.ExpiresAt.IsZero() || now.Add(window).Before(c.ExpiresAt)
}

func (b *Broker) provider(c *store.Connection) (Provider, error) {
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

// refresh joins (or starts) the single flight for id and mode and waits
// for it with the caller's context. The flight itself runs detached with a
// timeout, so one caller giving up does not cancel it for the others.
func (b *Broker) refresh(ctx context.Context, id string, mode refreshMode, stale *string) (Token, error) {
	// Each mode has its own flight, because an on-demand flight may decide
	// that no refresh is needed where a forced one must refresh. They all
	// meet at the store's lease, so only one reaches the provider at a time.
	key := id + "\x00" + strconv.Itoa(int(mode))
	ch := b.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout+b.leaseTTL)
		defer cancel()
		return b.refreshFlight(fctx, id, mode, stale)
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

// refreshFlight runs steps 3-8 of the refresh algorithm for one connection.
func (b *Broker) refreshFlight(ctx context.Context, id string, mode refreshMode, stale *string) (Token, error) {
	owner := b.flightOwner()
	c, err := b.acquireLease(ctx, id, owner, mode, stale)
	if err != nil {
		return Token{}, err
	}
	if c == nil {
		// Someone else refreshed while we waited; hand out their token.
		cur, err := b.store.GetConnection(ctx, id)
		if err != nil {
			return Token{}, err
		}
		return b.tokenOf(&cur)
	}
	defer b.releaseLease(id, owner)

	p, err := b.provider(c)
	if err != nil {
		return Token{}, err
	}
	now := b.now()

	// A token the provider issued earlier but that could not be saved comes
	// first: its refresh token is the live one.
	if tok := b.takeUnsaved(id); tok != nil {
		saved, err := b.saveRefreshed(ctx, c, p, tok, now)
		if err != nil {
			b.keepUnsaved(id, tok)
			return Token{}, err
		}
		c = &saved
		if mode != forced && c.Status == store.StatusActive && usable(c, now, p.RefreshWindow) && !b.isStale(c, stale) {
			return b.tokenOf(c)
		}
	}

	// Step 4: re-read under the lease; someone may have refreshed meanwhile.
	if b.canServeCurrent(c, mode, stale, now, p.RefreshWindow) {
		return b.tokenOf(c)
	}
	if err := errFromStatus(c, now); err != nil {
		switch {
		case oauth.Terminal(err):
			return Token{}, err
		case mode == forced:
			// An operator's "refresh now" is the way to end a cooldown early.
		case (mode == onDemand || mode == scheduled) && !c.ExpiresAt.IsZero() && now.Before(c.ExpiresAt):
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
		return b.renewClientCredentials(ctx, c, p, owner)
	}
	refreshToken, err := b.open(id, "refresh", c.RefreshToken)
	if err != nil {
		return Token{}, err
	}
	if refreshToken == "" || !canRefresh(c, now) {
		// Nothing to refresh with. An access token that still works is
		// served until it expires; then a person must reconnect.
		if (mode == onDemand || mode == scheduled) && !c.ExpiresAt.IsZero() && now.Before(c.ExpiresAt) {
			return b.tokenOf(c)
		}
		code := oauth.CodeNoRefreshToken
		desc := "the connection has no refresh token; reconnect to obtain a new grant"
		if refreshToken != "" {
			code, desc = oauth.CodeRefreshExpired, "the refresh token has expired; reconnect to obtain a new grant"
		}
		oerr := &oauth.Error{Op: "refresh", Code: code, Description: desc, Kind: oauth.KindTerminal}
		b.recordFailure(ctx, c, oerr)
		return Token{}, oerr
	}

	// Step 5: call the provider, renewing the lease while it works.
	stopRenew := b.renewLease(ctx, id, owner)
	callCtx, cancel := context.WithTimeout(ctx, b.timeout)
	started := time.Now()
	tok, err := p.Endpoint.Refresh(callCtx, refreshToken)
	b.metrics.RefreshFinished(p.Name, outcome(err), time.Since(started))
	cancel()
	stopRenew()
	if err != nil {
		b.recordFailure(ctx, c, err)
		return Token{}, err
	}
	if tok.RefreshToken == "" {
		// RFC 6749 §6: the server MAY issue a new refresh token; when it
		// does not, the old one stays valid.
		tok.RefreshToken = refreshToken
	}

	// Step 6: save first.
	saved, err := b.saveRefreshed(ctx, c, p, tok, b.now())
	if err != nil {
		// The provider has answered and, at a rotating provider, spent the
		// old refresh token. Keep the new token in memory and hand it out;
		// the next flight for this connection saves it before anything else.
		b.keepUnsaved(id, tok)
		b.log.ErrorContext(ctx, "refreshed token could not be saved; kept in memory and will be saved before the next refresh",
			"connection", id, "provider", c.Provider, "error", err)
		return Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresAt: tok.Expiry, Scope: tok.Scope, Provider: c.Provider}, nil
	}
	if saved.ExpiryDefaulted && p.CanIntrospect {
		if exp, ok := b.introspectExpiry(ctx, p, tok.AccessToken); ok {
			upd, err := b.store.UpdateConnection(ctx, id, func(old store.Connection) (store.Connection, error) {
				if old.Version != saved.Version {
					return old, store.ErrConflict // a newer token; its expiry is not ours to set
				}
				old.ExpiresAt, old.ExpiryDefaulted = exp, false
				old.NextRefreshAt = b.nextRefreshAt(&old, p)
				return old, nil
			})
			b.cache.invalidate(id)
			if err == nil {
				saved = upd
			}
		}
	}
	return b.tokenOf(&saved)
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

// canServeCurrent reports whether the row's token answers this flight
// without a refresh: for an on-demand flight, a token valid beyond the
// window; for a caller that saw a token fail, any other token.
func (b *Broker) canServeCurrent(c *store.Connection, mode refreshMode, stale *string, now time.Time, window time.Duration) bool {
	if c.Status != store.StatusActive {
		return false
	}
	switch mode {
	case onDemand:
		return usable(c, now, window)
	case scheduled:
		// Due is when the schedule says, which with its jitter can be up to
		// half a window before the window opens: declining then would leave
		// the connection to the next claim, possibly after it expired.
		p := b.providers[c.Provider]
		notYet := c.NextRefreshAt.IsZero() || now.Before(c.NextRefreshAt)
		return usable(c, now, window) && !keepAliveDue(c, p, now) && notYet
	case ifStale:
		return len(c.AccessToken) > 0 && !b.isStale(c, stale)
	default:
		return false
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

func canRefresh(c *store.Connection, now time.Time) bool {
	if !c.RefreshExpiresAt.IsZero() && !now.Before(c.RefreshExpiresAt) {
		return false
	}
	if !c.RefreshHardExpiresAt.IsZero() && !now.Before(c.RefreshHardExpiresAt) {
		return false
	}
	return true
}

// saveRefreshed writes a token the provider just issued. The write is a
// compare-and-swap on the version read under the lease. If the row moved on
// meanwhile, what moved decides: when only bookkeeping changed (a failure
// record written by a replica whose refresh lost, an edit of metadata), the
// token is applied to the newer row; when the tokens themselves changed,
// another refresh finished first (our lease lapsed), and a refresh that
// started from an old snapshot must not overwrite a newer one — the stored
// row wins and is returned instead.
func (b *Broker) saveRefreshed(ctx context.Context, c *store.Connection, p Provider, tok *oauth.Token, now time.Time) (store.Connection, error) {
	access, err := b.seal(c.ID, "access", tok.AccessToken)
	if err != nil {
		return store.Connection{}, err
	}
	refresh, err := b.seal(c.ID, "refresh", tok.RefreshToken)
	if err != nil {
		return store.Connection{}, err
	}
	oldRefresh, _ := b.open(c.ID, "refresh", c.RefreshToken)
	rotated := tok.RefreshToken != oldRefresh
	wasFailing := c.Status != store.StatusActive || c.Failure != nil

	apply := func(row store.Connection) store.Connection {
		row.AccessToken, row.RefreshToken = access, refresh
		if tok.TokenType != "" {
			row.TokenType = tok.TokenType
		}
		if tok.Scope != "" {
			row.Scope = tok.Scope
		}
		row.ExpiresAt, row.ExpiryDefaulted = tok.Expiry, tok.ExpiryDefaulted
		switch {
		case !tok.RefreshExpiry.IsZero():
			row.RefreshExpiresAt = tok.RefreshExpiry
		case rotated && p.RefreshTokenLifetime > 0:
			row.RefreshExpiresAt = now.Add(p.RefreshTokenLifetime)
		case rotated:
			row.RefreshExpiresAt = time.Time{}
		}
		if !tok.RefreshHardExpiry.IsZero() {
			row.RefreshHardExpiresAt = tok.RefreshHardExpiry
		}
		row.LastRefreshAt = now
		row.Status = store.StatusActive
		row.Failure = nil
		row.Events = nil
		if wasFailing {
			row.Events = []Event{b.event(EventRecovered, &row, "")}
		}
		row.NextRefreshAt = b.nextRefreshAt(&row, p)
		return row
	}

	oldAccess, _ := b.open(c.ID, "access", c.AccessToken)
	row := *c
	var saved store.Connection
	for attempt := 0; ; attempt++ {
		saved, err = b.store.CompareAndSwap(ctx, apply(row))
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 5 {
			return store.Connection{}, err
		}
		if row, err = b.store.GetConnection(ctx, c.ID); err != nil {
			return store.Connection{}, err
		}
		access, aerr := b.open(row.ID, "access", row.AccessToken)
		refresh, rerr := b.open(row.ID, "refresh", row.RefreshToken)
		if aerr != nil || rerr != nil || access != oldAccess || refresh != oldRefresh {
			b.log.WarnContext(ctx, "a newer token was saved while this refresh ran; keeping the newer one",
				"connection", c.ID, "provider", c.Provider, "version", row.Version)
			return row, nil
		}
	}
	b.cache.invalidate(c.ID)
	b.log.InfoContext(ctx, "token refreshed", "connection", c.ID, "provider", c.Provider, "rotated", rotated,
		"expires_at", saved.ExpiresAt)
	if wasFailing {
		b.emit(ctx, []Event{b.event(EventRecovered, &saved, "")})
	}
	return saved, nil
}

// recordFailure stores why a refresh failed and when to try again. A
// terminal failure marks the connection needs_reauth, after which the
// provider is not called for it again until it is reconnected; so do
// transient failures that have lasted longer than GiveUpAfter.
func (b *Broker) recordFailure(ctx context.Context, c *store.Connection, cause error) {
	now := b.now()
	code, message, kind, retryAfter := "refresh_failed", "", oauth.KindTransient, time.Duration(0)
	var oe *oauth.Error
	if errors.As(cause, &oe) {
		code, message, kind, retryAfter = oe.Code, oe.Description, oe.Kind, oe.RetryAfter
	}
	if code == "" {
		code = "refresh_failed"
	}
	var queued []Event
	record := func(old store.Connection) (store.Connection, error) {
		f := store.Failure{Code: code, Message: message, Attempts: 1, FirstAt: now}
		if old.Failure != nil {
			f.Attempts = old.Failure.Attempts + 1
			f.FirstAt = old.Failure.FirstAt
		}
		terminal := kind == oauth.KindTerminal
		if !terminal && now.Sub(f.FirstAt) >= b.giveUpAfter {
			terminal = true
			f.Message = fmt.Sprintf("refresh has failed since %s (%d attempts); last: %s",
				f.FirstAt.UTC().Format(time.RFC3339), f.Attempts, message)
		}
		old.Events = nil
		if terminal {
			if old.Status != store.StatusNeedsReauth {
				old.Events = []Event{b.event(EventReauthRequired, &old, code)}
			}
			old.Status = store.StatusNeedsReauth
		} else {
			wait := b.cooldown(f.Attempts)
			if wait < retryAfter {
				wait = retryAfter
			}
			f.NextAttemptAt = now.Add(wait)
			old.Events = []Event{b.event(EventRefreshFailed, &old, code)}
		}
		old.Failure = &f
		if p, ok := b.providers[old.Provider]; ok {
			old.NextRefreshAt = b.nextRefreshAt(&old, p)
		}
		queued = old.Events
		return old, nil
	}
	// A conflict means another write landed between the read and ours (a
	// lease renewal does not count): read again and record on top of it.
	var updated store.Connection
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if updated, err = b.store.UpdateConnection(ctx, c.ID, record); !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	b.cache.invalidate(c.ID)
	if err != nil {
		b.log.ErrorContext(ctx, "could not record refresh failure", "connection", c.ID, "error", err)
		return
	}
	b.log.WarnContext(ctx, "refresh failed", "connection", c.ID, "provider", c.Provider, "code", code,
		"kind", kind.String(), "attempts", updated.Failure.Attempts, "status", updated.Status)
	b.emit(ctx, queued)
}

// cooldown is how long a connection rests after its n-th consecutive
// transient failure. Equal jitter (half fixed, half random) rather than the
// full jitter of oauth.Backoff.Delay: spreading is still there, but the
// wait never collapses to nothing, which is what bounds the calls a dead
// connection costs its provider.
func (b *Broker) cooldown(n int) time.Duration {
	ceiling := b.backoff.Max
	if n-1 < 32 {
		ceiling = min(b.backoff.Max, b.backoff.Base<<(n-1))
	}
	return ceiling/2 + time.Duration(b.rand()*float64(ceiling/2))
}

func (b *Broker) takeUnsaved(id string) *oauth.Token {
	b.unsavedMu.Lock()
	defer b.unsavedMu.Unlock()
	t := b.unsaved[id]
	delete(b.unsaved, id)
	return t
}

func (b *Broker) keepUnsaved(id string, t *oauth.Token) {
	b.cache.invalidate(id)
	b.unsavedMu.Lock()
	b.unsaved[id] = t
	b.unsavedMu.Unlock()
}

func (b *Broker) forgetUnsaved(id string) {
	b.unsavedMu.Lock()
	delete(b.unsaved, id)
	b.unsavedMu.Unlock()
}
