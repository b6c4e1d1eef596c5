package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
)

func TestNewTokenSourceValidates(t *testing.T) {
	ok := func() Config {
		return Config{Refresher: &fakeRefresher{}, Token: initial(t0, time.Hour)}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"refresh token only", func(c *Config) { c.Token.AccessToken = "" }, ""},
		{"access token only", func(c *Config) { c.Token.RefreshToken = "" }, ""},
		{"no refresher", func(c *Config) { c.Refresher = nil }, "Refresher"},
		{"no token", func(c *Config) { c.Token = nil }, "Config.Token is nil"},
		{"empty token", func(c *Config) { c.Token = &oauth.Token{} }, "neither an access token nor a refresh token"},
		{"negative window", func(c *Config) { c.RefreshWindow = -time.Second }, "RefreshWindow"},
		{"negative timeout", func(c *Config) { c.RefreshTimeout = -time.Second }, "RefreshTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok()
			tt.mutate(&cfg)
			s, err := NewTokenSource(cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewTokenSource: %v", err)
				}
				_ = s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestTokenCopiesInitialToken(t *testing.T) {
	clk := newClock()
	tok := initial(clk.Now(), time.Hour)
	tok.TokenType = ""
	s := mustSource(t, Config{Refresher: &fakeRefresher{}, Token: tok, Now: clk.Now})
	tok.AccessToken = "fake-changed"
	got, err := s.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "fake-access-0" {
		t.Error("the source shares the caller's Config.Token")
	}
	if got.TokenType != "Bearer" {
		t.Errorf("TokenType = %q, want the RFC 6750 default Bearer", got.TokenType)
	}
}

// The fast path takes no lock and allocates nothing.
func TestTokenFastPath(t *testing.T) {
	clk := newClock()
	f := &fakeRefresher{now: clk.Now}
	s := mustSource(t, Config{Refresher: f, Token: initial(clk.Now(), time.Hour), Now: clk.Now})
	ctx := t.Context()

	// With the slow path's mutex held by the test, a Token call that tried
	// to lock would never return.
	s.mu.Lock()
	got, err := s.Token(ctx)
	s.mu.Unlock()
	if err != nil || got.AccessToken != "fake-access-0" {
		t.Fatalf("Token = %v, %v; want the initial token", got, err)
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = s.Token(ctx) })
	if allocs != 0 {
		t.Errorf("fast path allocates %v times per call, want 0", allocs)
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("Refresher called %d times for a fresh token", n)
	}
}

// 1000 callers on an expired token: one refresh, one Save, and Save
// finished before any caller got the token, including a caller that comes
// along while Save is still running.
func TestConcurrentExpiredOneRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRefresher{gate: make(chan struct{})}
		saveGate := make(chan struct{})
		var saved atomic.Pointer[oauth.Token]
		var saves atomic.Int32
		s := mustSource(t, Config{
			Refresher: f,
			Token:     initial(time.Now(), -time.Minute),
			Save: func(_ context.Context, tok *oauth.Token) error {
				saves.Add(1)
				<-saveGate
				saved.Store(tok) // the save completes here
				return nil
			},
		})

		const callers = 1000
		var (
			wg         sync.WaitGroup
			returned   atomic.Int32
			savedFirst atomic.Int32
			same       atomic.Int32
		)
		call := func() {
			tok, err := s.Token(context.Background())
			returned.Add(1)
			if err != nil {
				t.Errorf("Token: %v", err)
				return
			}
			if sv := saved.Load(); sv != nil && sv.AccessToken == tok.AccessToken {
				savedFirst.Add(1)
			}
			if tok.AccessToken == "fake-access-1" && tok.RefreshToken == "fake-refresh-1" {
				same.Add(1)
			}
		}
		for range callers - 1 {
			wg.Go(call)
		}
		synctest.Wait() // every caller is waiting on the one refresh
		close(f.gate)
		synctest.Wait() // the refresh is done, Save is running
		wg.Go(call)     // a latecomer must not get the unsaved token either
		synctest.Wait()
		if n := returned.Load(); n != 0 {
			t.Errorf("%d callers returned while Save was still running", n)
		}
		close(saveGate)
		wg.Wait()

		if n := f.calls.Load(); n != 1 {
			t.Errorf("Refresher called %d times, want 1", n)
		}
		if n := saves.Load(); n != 1 {
			t.Errorf("Save called %d times, want 1", n)
		}
		if n := same.Load(); n != callers {
			t.Errorf("%d of %d callers got the new token", n, callers)
		}
		if n := savedFirst.Load(); n != callers {
			t.Errorf("%d of %d callers returned after the token was saved", n, callers)
		}
	})
}

func TestRefreshWindow(t *testing.T) {
	tests := []struct {
		name        string
		ttl         time.Duration // from now
		issuedAgo   time.Duration // zero: IssuedAt unknown
		window      time.Duration
		wantRefresh bool
	}{
		{"well before the window", 6 * time.Minute, 0, 0, false},
		{"inside the default 5m window", 4 * time.Minute, 0, 0, true},
		{"inside a custom window", 9 * time.Minute, 0, 10 * time.Minute, true},
		{"outside a custom window", 9 * time.Minute, 0, time.Minute, false},
		{"expired", -time.Second, 0, 0, true},
		// A 2-minute token would always be inside a 5-minute window; the
		// window shrinks to half its lifetime.
		{"short-lived token, first half", 90 * time.Second, 30 * time.Second, 0, false},
		{"short-lived token, second half", 50 * time.Second, 70 * time.Second, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			f := &fakeRefresher{now: clk.Now}
			tok := initial(clk.Now(), tt.ttl)
			if tt.issuedAgo != 0 {
				tok.IssuedAt = clk.Now().Add(-tt.issuedAgo)
			}
			s := mustSource(t, Config{Refresher: f, Token: tok, RefreshWindow: tt.window, Now: clk.Now})
			got, err := s.Token(t.Context())
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			refreshed := got.AccessToken == "fake-access-1"
			if refreshed != tt.wantRefresh || f.calls.Load() != map[bool]int32{false: 0, true: 1}[tt.wantRefresh] {
				t.Errorf("refreshed = %v (calls %d), want %v", refreshed, f.calls.Load(), tt.wantRefresh)
			}
		})
	}
}

// A window refresh that fails transiently hands out the still-valid token,
// backs off instead of calling the provider on every Token, and retries
// after the backoff.
func TestStaleWhileRevalidate(t *testing.T) {
	clk := newClock()
	fail := atomic.Bool{}
	fail.Store(true)
	f := &fakeRefresher{now: clk.Now}
	f.fn = func(_ context.Context, n int32, _ string) (*oauth.Token, error) {
		if fail.Load() {
			return nil, errTransient
		}
		return f.token(n), nil
	}
	s := mustSource(t, Config{Refresher: f, Token: initial(clk.Now(), 4*time.Minute), Now: clk.Now})
	ctx := t.Context()

	for i := range 3 {
		got, err := s.Token(ctx)
		if err != nil || got.AccessToken != "fake-access-0" {
			t.Fatalf("call %d: Token = %v, %v; want the current token", i, got, err)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("Refresher called %d times, want 1 (then back off)", n)
	}

	clk.Advance(2 * time.Minute) // past the first backoff, token still valid
	if got, err := s.Token(ctx); err != nil || got.AccessToken != "fake-access-0" {
		t.Fatalf("after backoff: Token = %v, %v; want the current token", got, err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("Refresher called %d times after the backoff, want 2", n)
	}

	// Once it has expired, the failure is the caller's to see.
	clk.Advance(3 * time.Minute)
	_, err := s.Token(ctx)
	if !errors.Is(err, oauth.ErrTransient) || errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("expired token, transient failure: err = %v, want transient", err)
	}

	fail.Store(false)
	clk.Advance(5 * time.Minute)
	got, err := s.Token(ctx)
	if err != nil || got.AccessToken == "fake-access-0" {
		t.Fatalf("provider back: Token = %v, %v; want a new token", got, err)
	}
}

// Refresh(nil) forces, Refresh(current) invalidates, Refresh(old) does not
// refresh again.
func TestRefreshStale(t *testing.T) {
	clk := newClock()
	f := &fakeRefresher{now: clk.Now}
	s := mustSource(t, Config{Refresher: f, Token: initial(clk.Now(), time.Hour), Now: clk.Now})
	ctx := t.Context()
	old, _ := s.Token(ctx)

	got, err := s.Refresh(ctx, old)
	if err != nil || got.AccessToken != "fake-access-1" || f.calls.Load() != 1 {
		t.Fatalf("Refresh(current) = %v, %v (calls %d); want fake-access-1 after one call", got, err, f.calls.Load())
	}
	got, err = s.Refresh(ctx, old)
	if err != nil || got.AccessToken != "fake-access-1" || f.calls.Load() != 1 {
		t.Fatalf("Refresh(old) = %v, %v (calls %d); want the current token, no call", got, err, f.calls.Load())
	}
	// A clone of the stale token counts as the same token, once the
	// on-error budget allows another refresh caused by a rejection.
	clk.Advance(lifecycle.DefaultOnErrorInterval)
	got, err = s.Refresh(ctx, got.Clone())
	if err != nil || got.AccessToken != "fake-access-2" || f.calls.Load() != 2 {
		t.Fatalf("Refresh(clone of current) = %v, %v (calls %d); want a refresh", got, err, f.calls.Load())
	}
	got, err = s.Refresh(ctx, nil)
	if err != nil || got.AccessToken != "fake-access-3" || f.calls.Load() != 3 {
		t.Fatalf("Refresh(nil) = %v, %v (calls %d); want a forced refresh", got, err, f.calls.Load())
	}
}

// A token rejected by the API is not handed out again while its refresh
// fails, and Refresh(nil) ignores the backoff.
func TestRejectedTokenNotReused(t *testing.T) {
	clk := newClock()
	f := &fakeRefresher{now: clk.Now, fn: failWith(errTransient)}
	s := mustSource(t, Config{Refresher: f, Token: initial(clk.Now(), time.Hour), Now: clk.Now})
	ctx := t.Context()
	tok, _ := s.Token(ctx)

	if _, err := s.Refresh(ctx, tok); !errors.Is(err, oauth.ErrTransient) {
		t.Fatalf("Refresh(stale) = %v, want the transient error", err)
	}
	if _, err := s.Token(ctx); !errors.Is(err, oauth.ErrTransient) {
		t.Fatalf("Token after a rejected token = %v, want the transient error", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("Refresher called %d times, want 1 (backing off)", n)
	}
	if _, err := s.Refresh(ctx, nil); !errors.Is(err, oauth.ErrTransient) {
		t.Fatalf("Refresh(nil) = %v, want the transient error", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("Refresher called %d times, want Refresh(nil) to skip the backoff", n)
	}
}

// A token with unknown expiry is used until an API rejects it.
func TestUnknownExpiry(t *testing.T) {
	clk := newClock()
	f := &fakeRefresher{now: clk.Now}
	s := mustSource(t, Config{Refresher: f, Token: initial(clk.Now(), 0), Now: clk.Now})
	ctx := t.Context()

	clk.Advance(365 * 24 * time.Hour)
	tok, err := s.Token(ctx)
	if err != nil || tok.AccessToken != "fake-access-0" || f.calls.Load() != 0 {
		t.Fatalf("Token = %v, %v (calls %d); want the initial token without a refresh", tok, err, f.calls.Load())
	}
	got, err := s.Refresh(ctx, tok)
	if err != nil || got.AccessToken != "fake-access-1" || f.calls.Load() != 1 {
		t.Fatalf("Refresh(stale) = %v, %v (calls %d); want one refresh", got, err, f.calls.Load())
	}
}

// Without a usable refresh token the provider is never called; once the
// access token is gone the source is terminal.
func TestCannotRefresh(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(tok *oauth.Token, now time.Time)
		rejected bool   // the API rejected the access token (Refresh(stale))
		wantCode string // "" means the access token is still handed out
	}{
		{"no refresh token, valid access token", func(tok *oauth.Token, now time.Time) {
			tok.RefreshToken = ""
		}, false, ""},
		{"no refresh token, inside the window", func(tok *oauth.Token, now time.Time) {
			tok.RefreshToken = ""
			tok.Expiry = now.Add(time.Minute)
		}, false, ""},
		{"no refresh token, expired", func(tok *oauth.Token, now time.Time) {
			tok.RefreshToken = ""
			tok.Expiry = now.Add(-time.Minute)
		}, false, oauth.CodeNoRefreshToken},
		{"no refresh token, rejected", func(tok *oauth.Token, now time.Time) {
			tok.RefreshToken = ""
			tok.Expiry = time.Time{}
		}, true, oauth.CodeNoRefreshToken},
		{"refresh token expired, access expired", func(tok *oauth.Token, now time.Time) {
			tok.RefreshExpiry = now.Add(-time.Hour)
			tok.Expiry = now.Add(-time.Minute)
		}, false, oauth.CodeRefreshExpired},
		{"refresh token past its hard expiry, access expired", func(tok *oauth.Token, now time.Time) {
			tok.RefreshHardExpiry = now
			tok.Expiry = now.Add(-time.Minute)
		}, false, oauth.CodeRefreshExpired},
		{"refresh token expired, access rejected", func(tok *oauth.Token, now time.Time) {
			tok.RefreshExpiry = now.Add(-time.Hour)
		}, true, oauth.CodeRefreshExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			f := &fakeRefresher{now: clk.Now}
			var failures counter
			tok := initial(clk.Now(), time.Hour)
			tt.mutate(tok, clk.Now())
			s := mustSource(t, Config{Refresher: f, Token: tok, Now: clk.Now, OnFailure: failures.record})
			ctx := t.Context()

			got, err := s.Token(ctx)
			if tt.rejected && err == nil {
				got, err = s.Refresh(ctx, got)
			}
			if f.calls.Load() != 0 {
				t.Fatalf("Refresher called %d times without a usable refresh token", f.calls.Load())
			}
			if tt.wantCode == "" {
				if err != nil || got.AccessToken != "fake-access-0" {
					t.Fatalf("got %v, %v; want the access token", got, err)
				}
				return
			}
			var oe *oauth.Error
			if !errors.Is(err, oauth.ErrReauthRequired) || !errors.As(err, &oe) || oe.Code != tt.wantCode {
				t.Fatalf("err = %v, want ErrReauthRequired with code %s", err, tt.wantCode)
			}
			if n := failures.count(); n != 1 {
				t.Errorf("OnFailure called %d times, want 1", n)
			}
		})
	}
}

// A terminal failure is sticky: one provider call, OnFailure once, the same
// error for everyone afterwards.
func TestTerminalSticky(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRefresher{gate: make(chan struct{}), fn: failWith(errTerminal)}
		var failures counter
		s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), -time.Second), OnFailure: failures.record})

		const callers = 1000
		var wg sync.WaitGroup
		var reauth atomic.Int32
		for range callers {
			wg.Go(func() {
				if _, err := s.Token(context.Background()); errors.Is(err, oauth.ErrReauthRequired) {
					reauth.Add(1)
				}
			})
		}
		synctest.Wait()
		close(f.gate)
		wg.Wait()

		if n := reauth.Load(); n != callers {
			t.Errorf("%d of %d callers got ErrReauthRequired", n, callers)
		}
		if n := failures.count(); n != 1 {
			t.Fatalf("OnFailure called %d times, want 1", n)
		}
		if failures.at(0) != error(errTerminal) {
			t.Errorf("OnFailure got %v, want the Refresher's error", failures.at(0))
		}

		old := initial(time.Now(), 0)
		for name, call := range map[string]func() error{
			"Token":        func() error { _, err := s.Token(t.Context()); return err },
			"Refresh(nil)": func() error { _, err := s.Refresh(t.Context(), nil); return err },
			"Refresh(old)": func() error { _, err := s.Refresh(t.Context(), old); return err },
		} {
			if err := call(); err != error(errTerminal) {
				t.Errorf("%s after terminal failure = %v, want the same error", name, err)
			}
		}
		if n := f.calls.Load(); n != 1 {
			t.Errorf("Refresher called %d times, want 1", n)
		}
		if n := failures.count(); n != 1 {
			t.Errorf("OnFailure called %d times in all, want 1", n)
		}
	})
}

// A refresh response without a refresh token keeps the old one (and its
// expiry); an empty access token is not a token.
func TestRefreshResponseDefended(t *testing.T) {
	clk := newClock()
	rtExpiry := clk.Now().Add(30 * 24 * time.Hour)
	var answer atomic.Pointer[oauth.Token]
	f := &fakeRefresher{now: clk.Now}
	f.fn = func(context.Context, int32, string) (*oauth.Token, error) { return answer.Load(), nil }
	tok := initial(clk.Now(), -time.Minute)
	tok.RefreshExpiry = rtExpiry
	s := mustSource(t, Config{Refresher: f, Token: tok, Now: clk.Now})
	ctx := t.Context()

	answer.Store(&oauth.Token{AccessToken: "fake-access-1", TokenType: "bearer", Expiry: clk.Now().Add(time.Hour)})
	got, err := s.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "fake-access-1" || got.RefreshToken != "fake-refresh-0" || !got.RefreshExpiry.Equal(rtExpiry) {
		t.Fatalf("after a response without refresh token: access new %v, refresh kept %v, refresh expiry kept %v",
			got.AccessToken == "fake-access-1", got.RefreshToken == "fake-refresh-0", got.RefreshExpiry.Equal(rtExpiry))
	}
	if got.IssuedAt.IsZero() {
		t.Error("IssuedAt not set on the new token")
	}

	for _, garbage := range []*oauth.Token{nil, {RefreshToken: "fake-refresh-9", Expiry: clk.Now().Add(time.Hour)}} {
		answer.Store(garbage)
		_, err := s.Refresh(ctx, nil)
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Code != oauth.CodeInvalidResponse || oe.Kind != oauth.KindTransient {
			t.Fatalf("garbage answer: err = %v, want a transient invalid_response", err)
		}
		if cur, err := s.Token(ctx); err != nil || cur.AccessToken != "fake-access-1" || cur.RefreshToken != "fake-refresh-0" {
			t.Fatalf("garbage answer replaced the token (err %v)", err)
		}
	}
	if rts := f.refreshTokens(); rts[len(rts)-1] != "fake-refresh-0" {
		t.Error("later refreshes do not use the kept refresh token")
	}
}

// One waiter giving up does not cancel the shared refresh; the refresh runs
// with the caller's values, no cancellation and RefreshTimeout.
func TestCancelledWaiterDoesNotCancelRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type key struct{}
		var sawCancel, sawValue, sawDeadline atomic.Bool
		f := &fakeRefresher{gate: make(chan struct{})}
		f.fn = func(ctx context.Context, n int32, _ string) (*oauth.Token, error) {
			sawCancel.Store(ctx.Err() != nil)
			sawValue.Store(ctx.Value(key{}) == "v")
			dl, ok := ctx.Deadline()
			sawDeadline.Store(ok && dl.Equal(time.Now().Add(7*time.Second)))
			return f.token(n), nil
		}
		s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), -time.Second), RefreshTimeout: 7 * time.Second})

		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
		var firstErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, firstErr = s.Token(ctx) })
		synctest.Wait() // the first caller started the refresh and waits
		var other *oauth.Token
		var otherErr error
		wg.Go(func() { other, otherErr = s.Token(context.Background()) })
		synctest.Wait()

		cancel()
		synctest.Wait()
		if !errors.Is(firstErr, context.Canceled) {
			t.Errorf("cancelled caller got %v, want context.Canceled", firstErr)
		}
		close(f.gate)
		wg.Wait()

		if otherErr != nil || other.AccessToken != "fake-access-1" {
			t.Errorf("other caller: %v, %v; want the new token", other, otherErr)
		}
		if sawCancel.Load() {
			t.Error("the refresh saw the first caller's cancellation")
		}
		if !sawValue.Load() {
			t.Error("the refresh lost the caller's context values")
		}
		if !sawDeadline.Load() {
			t.Error("the refresh does not run with RefreshTimeout")
		}
	})
}

// A Refresher that hangs is cut off by RefreshTimeout; callers then get a
// transient error, not a hang.
func TestRefreshTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRefresher{gate: make(chan struct{})} // never opened
		s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), -time.Second), RefreshTimeout: 3 * time.Second})
		start := time.Now()
		_, err := s.Token(context.Background())
		if !errors.Is(err, oauth.ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a transient deadline error", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("gave up after %v, want RefreshTimeout (3s)", d)
		}
	})
}
