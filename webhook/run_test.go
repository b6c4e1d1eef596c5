package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// handlerTransport serves requests with a handler in memory, so that a
// synctest bubble has no network I/O to wait for.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// TestRunDeliversAndStops: the loop, on its own, sends a queued event,
// retries a failing receiver after its backoff, and returns when its
// context ends. Time is synctest's fake clock.
func TestRunDeliversAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), nil)
		var (
			mu    sync.Mutex
			times []time.Time
		)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			if len(times) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		d, err := New(Options{
			Outbox:       s,
			Endpoints:    []Endpoint{{Name: "ops", URL: "http://receiver.invalid/hooks", Secret: testSecret}},
			HTTPClient:   &http.Client{Transport: handlerTransport{h}},
			PollInterval: time.Second,
			Backoff:      oauth.Backoff{Base: 10 * time.Second, Max: time.Hour},
			Rand:         func() float64 { return 0 },
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()

		start := time.Now()
		queue(t, s, "conn-1", "connection.created", start)
		d.Notify()
		time.Sleep(time.Minute)
		synctest.Wait()

		mu.Lock()
		got := append([]time.Time(nil), times...)
		mu.Unlock()
		if len(got) != 2 {
			t.Fatalf("receiver got %d requests in a minute, want a failure and one retry", len(got))
		}
		if gap := got[1].Sub(got[0]); gap < 5*time.Second || gap > 5*time.Second+time.Second {
			t.Errorf("retry came %v after the failure, want the 5s backoff (plus at most one poll)", gap)
		}
		if n, _ := s.OutboxBacklog(t.Context()); n != 0 {
			t.Errorf("backlog = %d, want 0", n)
		}
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v after cancel, want context.Canceled", err)
		}
	})
}
