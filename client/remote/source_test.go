package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// fakeServer answers the two token routes the way tokenbroker does: the
// current token, valid for life from now; a stale report of the current
// token replaces it. gate, when set, holds every answer until closed.
type fakeServer struct {
	now     func() time.Time
	life    time.Duration
	gate    chan struct{}
	gets    atomic.Int32
	reports atomic.Int32

	mu  sync.Mutex
	gen int
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		f.gets.Add(1)
	case http.MethodPost:
		f.reports.Add(1)
		var in struct {
			StaleToken string `json:"stale_token"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		if in.StaleToken == fmt.Sprintf("fake-%d", f.gen) {
			f.gen++
		}
	}
	exp := f.now().Add(f.life)
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("fake-%d", f.gen), "token_type": "Bearer", "expires_at": exp})
}

func newFakeSource(t *testing.T, f *fakeServer, now func() time.Time) *TokenSource {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	api, err := New(Config{BaseURL: srv.URL, APIKey: "tbk_test"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewTokenSource(SourceConfig{Client: api, ConnectionID: "c", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Token reads the server once and then serves from memory until the token
// is due by the lifecycle rule: a 10-minute token against the default
// 5-minute window is due after 5 minutes.
func TestSourceCachesUntilDue(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	f := &fakeServer{now: clk.Now, life: 10 * time.Minute}
	s := newFakeSource(t, f, clk.Now)
	ctx := context.Background()
	for range 3 {
		if tok, err := s.Token(ctx); err != nil || tok.AccessToken != "fake-0" {
			t.Fatalf("Token: %v", err)
		}
	}
	clk.Advance(5*time.Minute - time.Second)
	if _, err := s.Token(ctx); err != nil || f.gets.Load() != 1 {
		t.Fatalf("before the due time: %d reads of the server, want 1 (%v)", f.gets.Load(), err)
	}
	clk.Advance(2 * time.Second)
	if _, err := s.Token(ctx); err != nil || f.gets.Load() != 2 {
		t.Fatalf("after the due time: %d reads of the server, want 2 (%v)", f.gets.Load(), err)
	}
}

// Concurrent callers share one read, and concurrent reports of the same
// stale token share one report; a report of a token already replaced
// costs no request.
func TestSourceSharesCalls(t *testing.T) {
	f := &fakeServer{now: time.Now, life: time.Hour, gate: make(chan struct{})}
	s := newFakeSource(t, f, nil)
	ctx := context.Background()
	const n = 50
	var wg sync.WaitGroup
	toks := make([]*oauth.Token, n)
	for i := range n {
		wg.Go(func() { toks[i], _ = s.Token(ctx) })
	}
	waitUntil(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.flight[""] != nil })
	close(f.gate)
	wg.Wait()
	if f.gets.Load() != 1 {
		t.Errorf("%d concurrent Token calls made %d reads, want 1", n, f.gets.Load())
	}
	old := toks[0]
	f.gate = nil
	for i := range n {
		wg.Go(func() { toks[i], _ = s.Refresh(ctx, old) })
	}
	wg.Wait()
	if f.reports.Load() != 1 {
		t.Errorf("%d concurrent reports of one stale token made %d requests, want 1", n, f.reports.Load())
	}
	for _, tok := range toks {
		if tok == nil || tok.AccessToken != "fake-1" {
			t.Fatal("a caller did not get the new token")
		}
	}
	if tok, err := s.Refresh(ctx, old); err != nil || tok.AccessToken != "fake-1" || f.reports.Load() != 1 {
		t.Errorf("a late report of the replaced token: %v, %d reports; want the new token and no request", err, f.reports.Load())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition never became true")
}
