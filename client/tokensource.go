package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
)

// Refresher exchanges a refresh token for a new [oauth.Token] (RFC 6749 §6).
// [*oauth.Endpoint] satisfies it.
//
// Errors should be [*oauth.Error]: errors.Is(err, [oauth.ErrReauthRequired])
// marks the grant dead, anything else is treated as transient. Refresh must
// honour ctx.
type Refresher interface {
	Refresh(ctx context.Context, refreshToken string) (*oauth.Token, error)
}

var _ Refresher = (*oauth.Endpoint)(nil)

// Defaults for the zero values of [Config].
const (
	DefaultRefreshWindow  = 5 * time.Minute
	DefaultRefreshTimeout = 30 * time.Second
)

// Config configures a [TokenSource]. Refresher and Token are required; every
// other field has a default.
type Config struct {
	// Refresher obtains new tokens. Required.
	Refresher Refresher

	// RefreshParams are extra form parameters for every refresh request of
	// this source, such as resource (RFC 8707) or scope (RFC 6749 §6).
	// They need a Refresher that is a [ParamRefresher] ([*oauth.Endpoint]
	// is one). Optional.
	RefreshParams url.Values

	// Token is the initial token, for example as loaded from storage. It may
	// be expired and may lack a refresh token; it needs an access token, a
	// refresh token or both. The source keeps a copy.
	Token *oauth.Token

	// RefreshWindow is how long before expiry the access token is refreshed.
	// Zero means Policy.Window, or [DefaultRefreshWindow]. For short-lived
	// tokens the window shrinks to half the token's lifetime (when
	// [oauth.Token.IssuedAt] is known), so a token that lives less than the
	// window is not refreshed on every call: the same rule as the server's
	// ([lifecycle.Policy.EffectiveWindow]).
	RefreshWindow time.Duration

	// Policy holds the rest of the provider's lifecycle rules: whether its
	// HTTP 400 answers to a refresh are transient, its rotation, and the
	// cooldown after transient failures (default from 1s doubling up to a
	// minute). The zero value suits most providers.
	Policy lifecycle.Policy

	// Rand draws the jitter of cooldowns and background refreshes from
	// [0, 1). Nil means math/rand/v2.
	Rand func() float64

	// Save persists a new token. It is called with every new token before
	// any caller can see it, so a rotated refresh token is stored before the
	// old one is forgotten (docs/architecture.md, "Save first").
	//
	// When Save fails the new token is still kept and handed out: at a
	// rotating provider the old refresh token is already spent, so dropping
	// the new one would kill the connection. The newest unsaved token is then
	// saved again with backoff, before the next refresh at the latest, and by
	// Close; every failure goes to OnSaveError and the logger. Saves happen
	// one at a time and never store an older token after a newer one.
	//
	// Save must not modify the token or call back into the TokenSource. Nil
	// means tokens are kept in memory only.
	Save func(ctx context.Context, tok *oauth.Token) error

	// OnSaveError is called with each failed Save, wrapped. It must not
	// block for long. Optional.
	OnSaveError func(err error)

	// OnFailure is called exactly once, with the terminal error, when the
	// source goes terminal (a person must re-authenticate). It runs before
	// the callers that waited on the failed refresh return, so it must not
	// block for long; calling Token from it returns the error at once.
	// Optional.
	OnFailure func(err error)

	// RefreshTimeout bounds one call to the Refresher (and one call to
	// Save). The shared refresh runs on context.WithoutCancel of the context
	// of the caller that started it, with this timeout, so one caller giving
	// up does not cancel it for the others. Zero means
	// [DefaultRefreshTimeout].
	RefreshTimeout time.Duration

	// Now is the clock. Nil means [time.Now].
	Now func() time.Time

	// Logger receives refresh and save events; it never sees token values.
	// Nil discards them.
	Logger *slog.Logger
}

// TokenSource keeps one grant's tokens fresh. It is safe for concurrent use.
//
// The zero value is not usable; create one with [NewTokenSource].
type TokenSource struct {
	refresher   Refresher
	params      url.Values
	save        func(context.Context, *oauth.Token) error
	onSaveError func(error)
	onFailure   func(error)
	policy      lifecycle.Policy
	rand        func() float64
	timeout     time.Duration
	now         func() time.Time
	log         *slog.Logger

	// cur is read without locking on the fast path. It is only replaced
	// under mu.
	cur atomic.Pointer[state]

	mu       sync.Mutex // guards the fields below; never held across a call out
	flight   *call
	changed  chan struct{} // closed and replaced whenever cur or retryAt changes
	failures int           // consecutive transient refresh failures
	retryAt  time.Time     // no automatic refresh before this (backoff)
	onError  time.Time     // when a rejection last caused a refresh (the on-error budget)
	lastErr  error         // the latest transient refresh failure
	started  bool          // StartBackground was called
	stopBg   context.CancelFunc
	closed   bool

	saveMu     sync.Mutex   // serialises calls to Save; guards the fields below
	pending    *oauth.Token // newest token whose Save failed; nil when storage is current
	retrying   bool         // a save retrier goroutine runs
	saveClosed bool

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // background loop and save retrier
}

// state is one immutable snapshot of the source. A new one is published for
// every change, so the fast path needs one atomic load.
type state struct {
	tok       *oauth.Token
	auth      []string      // the Authorization header value for tok, shared read-only
	o2        *oauth2.Token // tok converted for [TokenSource.OAuth2]
	refreshAt time.Time     // when tok becomes due (package lifecycle); zero when its expiry is unknown
	invalid   bool          // the access token is missing or an API rejected it
	err       error         // terminal failure: sticky
}

// fresh reports whether tok can be handed out without a refresh.
func (st *state) fresh(now time.Time) bool {
	return !st.invalid && (st.refreshAt.IsZero() || now.Before(st.refreshAt))
}

// usable reports whether tok can still be handed out while a refresh fails.
func (st *state) usable(now time.Time) bool {
	return !st.invalid && lifecycle.Unexpired(st.tok.Expiry, now)
}

func newState(tok *oauth.Token, p lifecycle.Policy) *state {
	return &state{
		tok:       tok,
		auth:      []string{authValue(tok)},
		invalid:   tok.AccessToken == "",
		o2:        toOAuth2(tok),
		refreshAt: p.DueAt(tok.IssuedAt, tok.Expiry),
	}
}

// call is one refresh in flight. Its result fields are written before done
// is closed and read only after.
type call struct {
	done chan struct{}
	st   *state
	err  error
}

// NewTokenSource validates cfg and returns a source holding cfg.Token. It
// starts no goroutine; see [TokenSource.StartBackground].
func NewTokenSource(cfg Config) (*TokenSource, error) {
	switch {
	case cfg.Refresher == nil:
		return nil, errors.New("client: Config.Refresher is nil")
	case cfg.Token == nil:
		return nil, errors.New("client: Config.Token is nil")
	case cfg.Token.AccessToken == "" && cfg.Token.RefreshToken == "":
		return nil, errors.New("client: Config.Token has neither an access token nor a refresh token")
	case cfg.RefreshWindow < 0:
		return nil, fmt.Errorf("client: Config.RefreshWindow is negative (%v)", cfg.RefreshWindow)
	case cfg.RefreshTimeout < 0:
		return nil, fmt.Errorf("client: Config.RefreshTimeout is negative (%v)", cfg.RefreshTimeout)
	}
	params, err := refreshParams(cfg.Refresher, cfg.RefreshParams)
	if err != nil {
		return nil, err
	}
	s := &TokenSource{
		refresher:   cfg.Refresher,
		params:      params,
		save:        cfg.Save,
		onSaveError: cfg.OnSaveError,
		onFailure:   cfg.OnFailure,
		policy:      cfg.Policy,
		rand:        cfg.Rand,
		timeout:     cfg.RefreshTimeout,
		now:         cfg.Now,
		log:         cfg.Logger,
		changed:     make(chan struct{}),
		done:        make(chan struct{}),
	}
	if cfg.RefreshWindow > 0 {
		s.policy.Window = cfg.RefreshWindow
	}
	if s.policy.Window == 0 {
		s.policy.Window = DefaultRefreshWindow
	}
	if s.policy.Cooldown.Base <= 0 {
		s.policy.Cooldown.Base = time.Second
	}
	if s.policy.Cooldown.Max <= 0 {
		s.policy.Cooldown.Max = time.Minute
	}
	if err := s.policy.Validate(); err != nil {
		return nil, fmt.Errorf("client: Config.Policy: %w", err)
	}
	if s.rand == nil {
		s.rand = rand.Float64
	}
	if s.timeout == 0 {
		s.timeout = DefaultRefreshTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	tok := cfg.Token.Clone()
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	s.cur.Store(newState(tok, s.policy))
	return s, nil
}

// Token returns a valid access token, refreshing it first when it is due.
//
// While the token is fresh Token neither locks nor waits. When a refresh is
// needed, concurrent callers share one; each waits with its own ctx and
// returns ctx.Err() when it gives up, without cancelling the refresh. If a
// refresh that was only due because of the refresh window fails transiently,
// Token returns the current, not yet expired token.
//
// Errors: [oauth.ErrReauthRequired] (via errors.Is) when the grant is dead —
// then every later call fails the same way at once — and otherwise the
// transient [*oauth.Error] of the failed refresh.
//
// The returned Token is shared: do not modify it (use [oauth.Token.Clone]).
func (s *TokenSource) Token(ctx context.Context) (*oauth.Token, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return st.tok, nil
}

// Refresh forces a refresh, typically because an API rejected stale, and
// returns the new token. If stale is no longer the current token (someone
// refreshed meanwhile) it returns the current one instead, refreshing only
// if that is due. A nil stale forces a refresh unconditionally, even while
// backing off after transient failures. A refresh already in flight is
// joined, not repeated.
//
// Marking stale as rejected means that, until a refresh succeeds, Token will
// not hand it out again. Errors are as for [TokenSource.Token].
func (s *TokenSource) Refresh(ctx context.Context, stale *oauth.Token) (*oauth.Token, error) {
	st, err := s.refresh(ctx, stale)
	if err != nil {
		return nil, err
	}
	return st.tok, nil
}

func (s *TokenSource) current(ctx context.Context) (*state, error) {
	st := s.cur.Load()
	if st.err == nil && st.fresh(s.now()) {
		return st, nil
	}
	return s.acquire(ctx, modeToken, nil)
}

func (s *TokenSource) refresh(ctx context.Context, stale *oauth.Token) (*state, error) {
	if stale == nil {
		return s.acquire(ctx, modeForce, nil)
	}
	return s.acquire(ctx, modeStale, stale)
}

type mode int

const (
	modeToken mode = iota // Token: refresh if due
	modeStale             // Refresh(stale): an API rejected seen
	modeForce             // Refresh(nil)
	modeAhead             // background: refresh seen ahead of expiry
)

// acquire is the slow path: it decides under mu whether a refresh is needed,
// starts or joins it, and waits for it with ctx.
func (s *TokenSource) acquire(ctx context.Context, m mode, seen *oauth.Token) (*state, error) {
	s.mu.Lock()
	st := s.cur.Load()
	if st.err != nil {
		s.mu.Unlock()
		return nil, st.err
	}
	now := s.now()
	if seen != nil && seen.AccessToken != st.tok.AccessToken {
		// Someone refreshed since seen was handed out.
		if m == modeAhead {
			s.mu.Unlock()
			return st, nil
		}
		m = modeToken
	}
	if m == modeStale && s.flight == nil {
		// The on-error budget (lifecycle.Policy.OnErrorInterval): a
		// rejection moments after another one caused a refresh keeps the
		// token; the caller passes the API's answer on. A refresh in
		// flight is joined instead.
		g := grantOf(st.tok)
		g.OnErrorRefreshAt = s.onError
		if s.policy.Serves(&g, lifecycle.Rejected, true, now) {
			s.mu.Unlock()
			return st, nil
		}
		s.onError = now
	}
	if m == modeStale && !st.invalid {
		inv := *st
		inv.invalid = true
		st = &inv
		s.publishLocked(st)
	}
	if m == modeToken && st.fresh(now) {
		s.mu.Unlock()
		return st, nil
	}
	c := s.flight
	if c == nil {
		var fail error
		switch {
		case !canRefresh(st.tok, now):
			if st.usable(now) {
				s.mu.Unlock()
				return st, nil
			}
			fail = noRefreshError(st.tok)
		case m != modeForce && now.Before(s.retryAt):
			// Backing off after a transient failure: do not call the
			// provider again yet.
			err := s.lastErr
			s.mu.Unlock()
			if m != modeStale && st.usable(now) {
				return st, nil
			}
			return nil, err
		}
		c = &call{done: make(chan struct{})}
		s.flight = c
		go s.run(context.WithoutCancel(ctx), c, st, fail)
	}
	s.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c.err == nil {
		return c.st, nil
	}
	if oauth.Terminal(c.err) || m == modeStale || m == modeForce {
		return nil, c.err
	}
	// Stale-while-revalidate: the refresh was due because of the window, the
	// token still works.
	if cur := s.cur.Load(); cur.err == nil && cur.usable(s.now()) {
		return cur, nil
	}
	return nil, c.err
}

// noRefreshError is the terminal error for a token that needs a refresh but
// cannot have one; canRefresh is false.
func noRefreshError(tok *oauth.Token) *oauth.Error {
	if tok.RefreshToken == "" {
		return &oauth.Error{Op: "refresh", Code: oauth.CodeNoRefreshToken, Kind: oauth.KindTerminal,
			Description: "the access token is expired or was rejected and there is no refresh token"}
	}
	return &oauth.Error{Op: "refresh", Code: oauth.CodeRefreshExpired, Kind: oauth.KindTerminal,
		Description: "the access token is expired or was rejected and the refresh token has expired"}
}

// run performs the refresh of call c, started from state old. A non-nil fail
// is a failure known before any provider call.
//
// Save failures are reported only after c is finished, so that OnSaveError
// calling Token cannot wait on this very refresh.
func (s *TokenSource) run(ctx context.Context, c *call, old *state, fail error) {
	var saveErrs []error
	defer func() {
		for _, err := range saveErrs {
			s.saveFailed(err)
		}
	}()

	var tok *oauth.Token
	err := fail
	if err == nil {
		// The refresh token about to be spent came from the newest token;
		// store that first if it has not been stored yet.
		if err := s.flushPending(ctx); err != nil {
			saveErrs = append(saveErrs, err)
		}
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		tok, err = s.callRefresher(rctx, old.tok.RefreshToken)
		cancel()
		if err == nil {
			tok, err = accept(old.tok, tok, s.policy, s.now())
		}
	}
	if err != nil {
		s.fail(c, err)
		return
	}

	if err := s.persist(ctx, tok); err != nil {
		saveErrs = append(saveErrs, err)
	}
	st := newState(tok, s.policy)
	s.mu.Lock()
	s.publishLocked(st)
	s.flight = nil
	s.failures, s.retryAt, s.lastErr = 0, time.Time{}, nil
	c.st = st
	s.mu.Unlock()
	close(c.done)
	s.log.LogAttrs(ctx, slog.LevelDebug, "client: token refreshed",
		slog.Time("expiry", tok.Expiry), slog.Bool("rotated", tok.RefreshToken != old.tok.RefreshToken))
}

// accept lands the Refresher's answer in the grant by [lifecycle.Apply],
// the rule the server uses too. Provider garbage never becomes a token; a
// missing refresh token keeps the old one.
func accept(old, ans *oauth.Token, p lifecycle.Policy, now time.Time) (*oauth.Token, error) {
	g, src, err := lifecycle.Apply(grantOf(old), lifecycle.Refreshed, ans, p, now, 0)
	if err != nil {
		return nil, &oauth.Error{Op: "refresh", Code: oauth.CodeInvalidResponse, Kind: oauth.KindTransient,
			Description: "the refresher returned no access token"}
	}
	t := ans.Clone()
	if src != lifecycle.RefreshFromAnswer {
		t.RefreshToken = old.RefreshToken
	}
	t.TokenType, t.Scope = g.TokenType, g.Scope
	t.IssuedAt, t.Expiry, t.ExpiryDefaulted = g.IssuedAt, g.ExpiresAt, g.ExpiryDefaulted
	t.RefreshExpiry, t.RefreshHardExpiry = g.RefreshExpiresAt, g.RefreshHardExpiresAt
	return t, nil
}

// canRefresh reports whether tok's refresh token may be sent at now
// (lifecycle.CanRefresh).
func canRefresh(tok *oauth.Token, now time.Time) bool {
	g := grantOf(tok)
	return lifecycle.CanRefresh(&g, now)
}

// grantOf is the lifecycle rules' view of tok, a grant the source holds.
func grantOf(tok *oauth.Token) lifecycle.Grant {
	return lifecycle.Grant{
		Status:               lifecycle.StatusActive,
		HasAccessToken:       tok.AccessToken != "",
		HasRefreshToken:      tok.RefreshToken != "",
		TokenType:            tok.TokenType,
		Scope:                tok.Scope,
		IssuedAt:             tok.IssuedAt,
		ExpiresAt:            tok.Expiry,
		ExpiryDefaulted:      tok.ExpiryDefaulted,
		RefreshExpiresAt:     tok.RefreshExpiry,
		RefreshHardExpiresAt: tok.RefreshHardExpiry,
	}
}

// fail ends call c with err: terminal errors become sticky, transient ones
// start a backoff.
func (s *TokenSource) fail(c *call, err error) {
	err = s.policy.Classify(err)
	terminal := oauth.Terminal(err)
	s.mu.Lock()
	cur := s.cur.Load()
	var wait time.Duration
	if terminal {
		dead := *cur
		dead.err = err
		s.publishLocked(&dead)
	} else {
		s.failures++
		wait = s.policy.CooldownAfter(s.failures, oauth.RetryAfter(err), s.rand())
		s.retryAt = s.now().Add(wait)
		s.lastErr = err
		s.notifyLocked()
	}
	s.flight = nil
	c.err = err
	s.mu.Unlock()

	code := errorCode(err)
	if terminal {
		s.log.LogAttrs(context.Background(), slog.LevelError, "client: refresh refused; re-authentication required",
			slog.String("code", code))
		if s.onFailure != nil {
			s.onFailure(err)
		}
	} else {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "client: refresh failed; will retry",
			slog.String("code", code), slog.Duration("retry_in", wait))
	}
	close(c.done)
}

func errorCode(err error) string {
	var oe *oauth.Error
	if errors.As(err, &oe) {
		return oe.Code
	}
	return "unknown"
}

// publishLocked makes st the current state. s.mu must be held.
func (s *TokenSource) publishLocked(st *state) {
	s.cur.Store(st)
	s.notifyLocked()
}

func (s *TokenSource) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// authValue is the Authorization header value for tok (RFC 6750 §2.1),
// with the token type spelled canonically as x/oauth2 does: some providers
// answer "bearer" but APIs reject anything but "Bearer".
func authValue(tok *oauth.Token) string {
	return oauth.CanonicalTokenType(tok.TokenType) + " " + tok.AccessToken
}
