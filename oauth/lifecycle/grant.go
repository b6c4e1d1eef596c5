package lifecycle

import (
	"errors"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Status is a grant's state. Refreshing is not a status: the lease is.
type Status string

const (
	StatusActive      Status = "active"
	StatusNeedsReauth Status = "needs_reauth"
	StatusRevoked     Status = "revoked"
)

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case StatusActive, StatusNeedsReauth, StatusRevoked:
		return true
	}
	return false
}

// Failure records why the last refresh failed.
type Failure struct {
	// Code is the sanitized error code callers may see ("invalid_grant",
	// "http_503", "network").
	Code string `json:"code"`
	// Message is the provider's own text, for admins only.
	Message string `json:"message,omitempty"`
	// Attempts counts consecutive failures since the last success.
	Attempts int `json:"attempts"`
	// FirstAt is when the current run of failures began.
	FirstAt time.Time `json:"first_at"`
	// NextAttemptAt is when the provider may be called again; until then
	// on-demand requests answer at once without calling it.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
}

// Grant is what the rules know of one grant: its state and the facts about
// its tokens, not the token values, which stay with the caller (sealed, in
// the server). [Apply] says which refresh token the caller keeps.
type Grant struct {
	Status          Status
	HasAccessToken  bool
	HasRefreshToken bool
	TokenType       string
	Scope           string

	// IssuedAt is when the current access token was obtained.
	IssuedAt time.Time
	// ExpiresAt is the access token's expiry; zero when unknown.
	ExpiresAt time.Time
	// ExpiryDefaulted: ExpiresAt came from the policy's default lifetime,
	// so introspection may learn the real one.
	ExpiryDefaulted bool
	// RefreshExpiresAt is the refresh token's own expiry;
	// RefreshHardExpiresAt an absolute limit on its chain. Zero: unknown.
	RefreshExpiresAt     time.Time
	RefreshHardExpiresAt time.Time

	// LastRefreshAt is when the grant was last refreshed; zero if never.
	LastRefreshAt time.Time
	// OnErrorRefreshAt is when a caller's report of a failing token last
	// caused a refresh: the on-error budget allows one per OnErrorInterval.
	OnErrorRefreshAt time.Time
	// NextRefreshAt is when the schedule refreshes the grant next; zero
	// when there is nothing to schedule.
	NextRefreshAt time.Time
	Failure       *Failure
}

// Failing reports whether g is not healthy: it needs a person, or its last
// refresh failed.
func (g *Grant) Failing() bool { return g.Status != StatusActive || g.Failure != nil }

// CanRefresh reports whether g holds a refresh token that is not known to
// be dead at now. Sending one that is known dead only earns invalid_grant
// and, at some providers, a rate-limit strike.
func CanRefresh(g *Grant, now time.Time) bool {
	if !g.HasRefreshToken {
		return false
	}
	for _, end := range []time.Time{g.RefreshExpiresAt, g.RefreshHardExpiresAt} {
		if !end.IsZero() && !now.Before(end) {
			return false
		}
	}
	return true
}

// KeepAliveDue reports whether g's refresh token should be used at now so
// that it does not die of disuse: a tenth of the provider's idle timeout
// before it would.
func (p Policy) KeepAliveDue(g *Grant, now time.Time) bool {
	at := p.keepAliveAt(g)
	return !at.IsZero() && !now.Before(at)
}

func (p Policy) keepAliveAt(g *Grant) time.Time {
	if p.RefreshIdleTimeout <= 0 || !g.HasRefreshToken || g.IssuedAt.IsZero() {
		return time.Time{}
	}
	// The refresh token was last used when the current access token was
	// issued (by a refresh, or with the grant itself).
	return g.IssuedAt.Add(p.RefreshIdleTimeout - p.RefreshIdleTimeout/10)
}

// NextRefresh is when the schedule should refresh g: somewhat before the
// token becomes due (jitter, drawn from [0, 1), moves it up to a quarter of
// the window earlier, so tokens issued together are not all refreshed in
// the same second), or before its refresh token would die of disuse,
// whichever comes first, and never inside a failure's cooldown. Zero when
// nothing is to be scheduled: the grant needs a person, or its token has
// no known expiry and no idle limit.
func (p Policy) NextRefresh(g *Grant, jitter float64) time.Time {
	if g.Status != StatusActive {
		return time.Time{}
	}
	var next time.Time
	if due := p.DueAt(g.IssuedAt, g.ExpiresAt); !due.IsZero() {
		w := p.EffectiveWindow(g.IssuedAt, g.ExpiresAt)
		next = due.Add(-time.Duration(clamp01(jitter) * float64(w/4)))
	}
	if keep := p.keepAliveAt(g); !keep.IsZero() && (next.IsZero() || keep.Before(next)) {
		next = keep
	}
	if f := g.Failure; f != nil && !next.IsZero() && next.Before(f.NextAttemptAt) {
		next = f.NextAttemptAt
	}
	return next
}

// Reason says why a token is asked for; it decides when the current token
// answers without a refresh.
type Reason int

const (
	// OnDemand: a caller wants a valid token.
	OnDemand Reason = iota
	// Rejected: a caller saw a token fail at an API.
	Rejected
	// Forced: an operator asked for a refresh now.
	Forced
	// Scheduled: the schedule found the grant due.
	Scheduled
)

func (r Reason) String() string {
	switch r {
	case OnDemand:
		return "on_demand"
	case Rejected:
		return "rejected"
	case Forced:
		return "forced"
	case Scheduled:
		return "scheduled"
	}
	return "unknown"
}

// Serves reports whether g's current token answers a request for reason at
// now, so that no refresh is needed. For Rejected, rejectedIsCurrent says
// whether the token the caller saw fail is still g's current one (if not,
// someone refreshed meanwhile and the new token answers); the current token
// answers too while the on-error budget is spent: a caller's report already
// caused a refresh less than OnErrorInterval ago.
func (p Policy) Serves(g *Grant, reason Reason, rejectedIsCurrent bool, now time.Time) bool {
	if g.Status != StatusActive || !g.HasAccessToken {
		return false
	}
	switch reason {
	case OnDemand:
		return p.Fresh(g.IssuedAt, g.ExpiresAt, now)
	case Scheduled:
		// Due is when the schedule says, which with its jitter is a little
		// before the token itself is due: declining then would leave the
		// grant to the next claim, possibly after it expired.
		notYet := g.NextRefreshAt.IsZero() || now.Before(g.NextRefreshAt)
		return notYet && p.Fresh(g.IssuedAt, g.ExpiresAt, now) && !p.KeepAliveDue(g, now)
	case Rejected:
		// Someone refreshed since the caller's token was handed out; or a
		// caller's report already caused a refresh within the interval (the
		// on-error budget: the caller gets the token back and passes the
		// API's answer on).
		return !rejectedIsCurrent || (!g.OnErrorRefreshAt.IsZero() && now.Sub(g.OnErrorRefreshAt) < p.onErrorInterval())
	}
	return false
}

// ServesWhileFailing reports whether g's current token may be handed out
// for reason at now although a refresh cannot happen (a cooldown, a failed
// refresh, no refresh token): stale-while-revalidate, for callers that
// only need a token that works.
func ServesWhileFailing(g *Grant, reason Reason, now time.Time) bool {
	return (reason == OnDemand || reason == Scheduled) && g.Status == StatusActive &&
		g.HasAccessToken && !g.ExpiresAt.IsZero() && Unexpired(g.ExpiresAt, now)
}

// Origin says where a token landing in a grant came from.
type Origin int

const (
	// Refreshed: the grant's own renewal (a refresh, or asking again with
	// client credentials). The chain continues.
	Refreshed Origin = iota
	// RefreshedOnError: as Refreshed, caused by a caller's report that the
	// token failed; it spends the on-error budget.
	RefreshedOnError
	// Granted: a new grant, imported or obtained by the connect flow.
	Granted
	// Introspected: the provider told the real expiry of the current
	// access token (RFC 7662); only the expiry changes.
	Introspected
)

// RefreshSource says which refresh token the grant holds after [Apply].
type RefreshSource int

const (
	// RefreshFromAnswer: the answer's refresh token.
	RefreshFromAnswer RefreshSource = iota
	// RefreshKept: the grant's previous refresh token; the answer had none.
	RefreshKept
	// RefreshNone: no refresh token.
	RefreshNone
)

// ErrNoAccessToken is returned by [Apply] for an answer without an access
// token: provider garbage never becomes a token.
var ErrNoAccessToken = errors.New("lifecycle: the answer carries no access token")

// Apply lands ans, a token the provider issued, in g at now: the one
// transition used by import, re-import, the connect flow, refresh,
// client-credentials renewal and the introspection follow-up. jitter,
// drawn from [0, 1), spreads the next scheduled refresh.
//
//   - The expiry is the answer's; else, for a token with no stated
//     lifetime, the policy's default (ExpiryDefaulted); else unknown.
//   - A refresh answer without a refresh token keeps the previous one
//     (RFC 6749 §6), with its expiries, unless the grant is known dead; a
//     new grant replaces it, with none if it brought none. A refresh token
//     that came gets the answer's expiry, else the policy's lifetime.
//   - The grant is active with its failure cleared, and its next refresh
//     recomputed from the new expiry.
//   - Introspected changes only the expiry (ans.Expiry), and keeps the
//     refresh token and the failure as they are.
//
// g's token values are the caller's; the returned RefreshSource says which
// refresh token to keep. Apply returns ErrNoAccessToken, and g unchanged,
// for an answer without an access token.
func Apply(g Grant, origin Origin, ans *oauth.Token, p Policy, now time.Time, jitter float64) (Grant, RefreshSource, error) {
	if ans == nil || (origin != Introspected && ans.AccessToken == "") {
		return g, RefreshNone, ErrNoAccessToken
	}
	if origin == Introspected {
		if !ans.Expiry.IsZero() {
			g.ExpiresAt, g.ExpiryDefaulted = ans.Expiry, false
		}
		g.NextRefreshAt = p.NextRefresh(&g, jitter)
		src := RefreshKept
		if !g.HasRefreshToken {
			src = RefreshNone
		}
		return g, src, nil
	}

	dead := g.Status != StatusActive
	next := g
	next.Status, next.Failure = StatusActive, nil
	next.HasAccessToken = true
	next.TokenType = oauth.CanonicalTokenType(ans.TokenType)
	if ans.Scope != "" || origin == Granted {
		// RFC 6749 §5.1: a refresh answer without scope keeps the grant's.
		next.Scope = ans.Scope
	}
	next.IssuedAt = ans.IssuedAt
	if next.IssuedAt.IsZero() {
		next.IssuedAt = now
	}
	next.ExpiresAt, next.ExpiryDefaulted = ans.Expiry, ans.ExpiryDefaulted && !ans.Expiry.IsZero()
	if next.ExpiresAt.IsZero() && p.DefaultLifetime > 0 {
		next.ExpiresAt, next.ExpiryDefaulted = next.IssuedAt.Add(p.DefaultLifetime), true
	}

	var src RefreshSource
	switch {
	case ans.RefreshToken != "":
		src = RefreshFromAnswer
		next.HasRefreshToken = true
		next.RefreshExpiresAt = ans.RefreshExpiry
		if next.RefreshExpiresAt.IsZero() && p.RefreshTokenLifetime > 0 {
			next.RefreshExpiresAt = next.IssuedAt.Add(p.RefreshTokenLifetime)
		}
		next.RefreshHardExpiresAt = ans.RefreshHardExpiry
		if next.RefreshHardExpiresAt.IsZero() && origin != Granted {
			// The hard limit is the chain's: rotation does not move it.
			next.RefreshHardExpiresAt = g.RefreshHardExpiresAt
		}
	case g.HasRefreshToken && !dead && origin != Granted:
		src = RefreshKept
		if !ans.RefreshExpiry.IsZero() {
			next.RefreshExpiresAt = ans.RefreshExpiry
		}
		if !ans.RefreshHardExpiry.IsZero() {
			next.RefreshHardExpiresAt = ans.RefreshHardExpiry
		}
	default:
		src = RefreshNone
		next.HasRefreshToken = false
		next.RefreshExpiresAt, next.RefreshHardExpiresAt = time.Time{}, time.Time{}
	}
	if origin != Granted {
		next.LastRefreshAt = now
	}
	if origin == RefreshedOnError {
		next.OnErrorRefreshAt = now
	}
	next.NextRefreshAt = p.NextRefresh(&next, jitter)
	return next, src, nil
}

func clamp01(x float64) float64 {
	switch {
	case !(x > 0):
		return 0
	case x >= 1:
		return 1
	}
	return x
}

// RefreshEndsWithin reports whether g's refresh token, or its chain's hard
// limit (Intuit's x_refresh_token_hard_expires_in), ends within d of now.
// Refreshing does not help past a hard limit, so this warns a person that
// the user will have to reconnect.
func RefreshEndsWithin(g *Grant, now time.Time, d time.Duration) bool {
	if g.Status != StatusActive || !g.HasRefreshToken {
		return false
	}
	for _, end := range []time.Time{g.RefreshExpiresAt, g.RefreshHardExpiresAt} {
		if !end.IsZero() && end.After(now) && end.Sub(now) <= d {
			return true
		}
	}
	return false
}
