package client

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// The background refresh runs inside the window (minus jitter), before any
// caller needs it, and keeps doing so; Close stops it.
func TestBackgroundRefreshAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRefresher{}
		s, err := NewTokenSource(Config{Refresher: f, Token: initial(time.Now(), time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		s.StartBackground(context.Background())
		s.StartBackground(context.Background()) // no second loop

		// Due at 55m; the schedule's jitter is at most a quarter of the 5m
		// window (lifecycle.Policy.NextRefresh).
		time.Sleep(53*time.Minute + 30*time.Second)
		if n := f.calls.Load(); n != 0 {
			t.Fatalf("refreshed %d times before the window", n)
		}
		time.Sleep(90*time.Second + time.Second)
		if n := f.calls.Load(); n != 1 {
			t.Fatalf("refreshed %d times by the end of the window, want 1", n)
		}
		tok, err := s.Token(context.Background())
		if err != nil || tok.AccessToken != "fake-access-1" || f.calls.Load() != 1 {
			t.Fatalf("Token = %v, %v; want the token refreshed in the background", tok, err)
		}
		time.Sleep(time.Hour)
		if n := f.calls.Load(); n != 2 {
			t.Fatalf("refreshed %d times after another hour, want 2", n)
		}

		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Hour)
		if n := f.calls.Load(); n != 2 {
			t.Errorf("refreshed %d times after Close, want 2", n)
		}
		s.StartBackground(context.Background()) // after Close: nothing
		time.Sleep(10 * time.Hour)
		if n := f.calls.Load(); n != 2 {
			t.Errorf("StartBackground after Close refreshed (%d calls)", n)
		}
	})
}

// Transient failures are retried with backoff, not in a tight loop.
func TestBackgroundRetriesTransient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRefresher{}
		f.fn = func(_ context.Context, n int32, _ string) (*oauth.Token, error) {
			if n <= 3 {
				return nil, errTransient
			}
			return f.token(n), nil
		}
		s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), 2*time.Minute)})
		s.StartBackground(context.Background())

		// The loop waits at least a second between attempts.
		time.Sleep(999 * time.Millisecond)
		if n := f.calls.Load(); n != 1 {
			t.Fatalf("%d calls in the first 999ms, want 1", n)
		}
		time.Sleep(time.Minute)
		if n := f.calls.Load(); n != 4 {
			t.Fatalf("%d calls after a minute, want 4 (3 failures then success)", n)
		}
		tok, err := s.Token(context.Background())
		if err != nil || tok.AccessToken != "fake-access-4" {
			t.Fatalf("Token = %v, %v; want the background's token", tok, err)
		}
	})
}

// The loop ends with its context, and once the source is terminal; a source
// that cannot refresh reports its death when the access token expires,
// without waiting for a caller.
func TestBackgroundStops(t *testing.T) {
	t.Run("context cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeRefresher{}
			s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), time.Hour)})
			ctx, cancel := context.WithCancel(context.Background())
			s.StartBackground(ctx)
			cancel()
			time.Sleep(10 * time.Hour)
			if n := f.calls.Load(); n != 0 {
				t.Errorf("%d refreshes after the context was cancelled", n)
			}
		})
	})
	t.Run("Close during a refresh", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeRefresher{gate: make(chan struct{})}
			s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), time.Minute)})
			s.StartBackground(context.Background())
			synctest.Wait() // the loop's refresh hangs at the provider
			if n := f.calls.Load(); n != 1 {
				t.Fatalf("%d refresh calls, want 1 in flight", n)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			close(f.gate) // the detached refresh still completes for its callers
			synctest.Wait()
			tok, err := s.Token(context.Background())
			if err != nil || tok.AccessToken != "fake-access-1" {
				t.Errorf("Token after the detached refresh = %v, %v; want its token", tok, err)
			}
		})
	})
	t.Run("terminal", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeRefresher{fn: failWith(errTerminal)}
			var failures counter
			s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), time.Hour), OnFailure: failures.record})
			s.StartBackground(context.Background())
			time.Sleep(10 * time.Hour)
			if n := f.calls.Load(); n != 1 {
				t.Errorf("%d refresh calls, want 1 then stop", n)
			}
			if n := failures.count(); n != 1 {
				t.Errorf("OnFailure called %d times, want 1", n)
			}
		})
	})
	t.Run("no refresh token", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeRefresher{}
			var failed atomic.Int64 // unix seconds of the OnFailure call
			tok := initial(time.Now(), time.Hour)
			tok.RefreshToken = ""
			s := mustSource(t, Config{Refresher: f, Token: tok, OnFailure: func(error) { failed.Store(time.Now().Unix()) }})
			s.StartBackground(context.Background())
			time.Sleep(2 * time.Hour)
			if got := failed.Load(); got != tok.Expiry.Unix() {
				t.Errorf("OnFailure at %d, want at the access token's expiry %d", got, tok.Expiry.Unix())
			}
			if n := f.calls.Load(); n != 0 {
				t.Errorf("%d refresh calls without a refresh token", n)
			}
		})
	})
	t.Run("unknown expiry idles until rejected", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeRefresher{}
			f.fn = func(_ context.Context, n int32, _ string) (*oauth.Token, error) {
				if n == 1 {
					return nil, errTransient
				}
				return f.token(n), nil
			}
			s := mustSource(t, Config{Refresher: f, Token: initial(time.Now(), 0)})
			s.StartBackground(context.Background())
			time.Sleep(100 * time.Hour)
			if n := f.calls.Load(); n != 0 {
				t.Fatalf("%d refreshes of a token with unknown expiry", n)
			}
			// An API rejects it and the refresh fails: the background
			// retries after the backoff, before any caller asks again.
			tok, _ := s.Token(context.Background())
			if _, err := s.Refresh(context.Background(), tok); err == nil {
				t.Fatal("Refresh succeeded, want the transient failure")
			}
			time.Sleep(2 * time.Second)
			if n := f.calls.Load(); n != 2 {
				t.Fatalf("%d refresh calls 2s after the failure, want 2", n)
			}
			got, err := s.Token(context.Background())
			if err != nil || got.AccessToken != "fake-access-2" || f.calls.Load() != 2 {
				t.Fatalf("Token = %v, %v; want the background's token", got, err)
			}
		})
	})
}
