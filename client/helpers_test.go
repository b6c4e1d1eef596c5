package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// t0 is the fake clock's start. Token values in these tests are obviously
// fake ("fake-access-N") and never printed.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newClock() *fakeClock { return &fakeClock{now: t0} }

// fakeClock reads a fixed time until advanced. (The server's tests share
// internal/fakeclock; the library module cannot import the server's module,
// docs/library.md "Modules".)
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeRefresher counts calls, can hold them in flight, and by default
// rotates: call n returns fake-access-n / fake-refresh-n valid for an hour.
type fakeRefresher struct {
	now     func() time.Time
	calls   atomic.Int32
	entered chan struct{} // when non-nil, receives once per call as it starts
	gate    chan struct{} // when non-nil, calls wait until it is closed (or ctx ends)
	fn      func(ctx context.Context, n int32, rt string) (*oauth.Token, error)

	mu  sync.Mutex
	rts []string // refresh tokens received, in order
}

func (f *fakeRefresher) Refresh(ctx context.Context, rt string) (*oauth.Token, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	f.rts = append(f.rts, rt)
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, &oauth.Error{Op: "refresh", Code: oauth.CodeNetwork, Kind: oauth.KindTransient, Err: ctx.Err()}
		}
	}
	if f.fn != nil {
		return f.fn(ctx, n, rt)
	}
	return f.token(n), nil
}

func (f *fakeRefresher) token(n int32) *oauth.Token {
	now := time.Now
	if f.now != nil {
		now = f.now
	}
	return &oauth.Token{
		AccessToken:  fmt.Sprintf("fake-access-%d", n),
		RefreshToken: fmt.Sprintf("fake-refresh-%d", n),
		TokenType:    "Bearer",
		Expiry:       now().Add(time.Hour),
	}
}

func (f *fakeRefresher) refreshTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.rts...)
}

var (
	errTransient = &oauth.Error{Op: "refresh", StatusCode: 503, Code: "http_503", Kind: oauth.KindTransient}
	errTerminal  = &oauth.Error{Op: "refresh", StatusCode: 400, Code: "invalid_grant", Kind: oauth.KindTerminal}
)

// failWith returns a Refresher function that always fails with err.
func failWith(err error) func(context.Context, int32, string) (*oauth.Token, error) {
	return func(context.Context, int32, string) (*oauth.Token, error) { return nil, err }
}

// initial is the token sources start from: fake-access-0 / fake-refresh-0,
// expiring in ttl from now (zero ttl: unknown expiry).
func initial(now time.Time, ttl time.Duration) *oauth.Token {
	tok := &oauth.Token{AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", TokenType: "Bearer"}
	if ttl != 0 {
		tok.Expiry = now.Add(ttl)
	}
	return tok
}

func mustSource(t testing.TB, cfg Config) *TokenSource {
	t.Helper()
	s, err := NewTokenSource(cfg)
	if err != nil {
		t.Fatalf("NewTokenSource: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// counter counts calls of a callback and remembers the errors it got.
type counter struct {
	mu   sync.Mutex
	errs []error
}

func (c *counter) record(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.errs)
}

func (c *counter) at(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs[i]
}
