package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
)

// stepCounter answers counts it is handed, one per call, and records calls.
type stepCounter struct {
	mu      sync.Mutex
	calls   int
	answers chan map[string]int
	err     error
}

func (s *stepCounter) CountByStatus(ctx context.Context) (map[string]int, error) {
	s.mu.Lock()
	s.calls++
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return <-s.answers, nil
}

func (s *stepCounter) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func TestCountCache(t *testing.T) {
	clk := fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &stepCounter{answers: make(chan map[string]int, 1)}
	c := newCountCache(src, 15*time.Second, clk.Now, slog.New(slog.DiscardHandler))
	counted := make(chan struct{}, 4)
	c.counted = func() { counted <- struct{}{} }
	ctx := context.Background()

	// The first page counts, and waits for it.
	src.answers <- map[string]int{"active": 1}
	got, err := c.CountByStatus(ctx)
	if err != nil || got["active"] != 1 || src.callCount() != 1 {
		t.Fatalf("first count = %v, %v after %d calls; want active 1 after 1", got, err, src.callCount())
	}
	// Within the ttl: from memory.
	clk.Advance(14 * time.Second)
	got, _ = c.CountByStatus(ctx)
	if got["active"] != 1 || src.callCount() != 1 {
		t.Fatalf("within the ttl: %v after %d calls; want the cached count, no new call", got, src.callCount())
	}
	got["active"] = 99 // the caller's copy
	if again, _ := c.CountByStatus(ctx); again["active"] != 1 {
		t.Fatalf("a caller's change reached the cache: %v", again)
	}

	// Past the ttl: the old counts at once, one recount in the
	// background however many pages ask meanwhile.
	clk.Advance(2 * time.Second)
	for range 3 {
		if got, _ := c.CountByStatus(ctx); got["active"] != 1 {
			t.Fatalf("while recounting: %v, want the old count", got)
		}
	}
	src.answers <- map[string]int{"active": 2}
	<-counted
	if n := src.callCount(); n != 2 {
		t.Fatalf("%d calls after three stale pages, want 2 (one background recount)", n)
	}
	if got, _ := c.CountByStatus(ctx); got["active"] != 2 {
		t.Fatalf("after the recount: %v, want the new count", got)
	}
}

func TestCountCacheFirstError(t *testing.T) {
	clk := fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &stepCounter{answers: make(chan map[string]int, 1), err: errors.New("database down")}
	c := newCountCache(src, 15*time.Second, clk.Now, slog.New(slog.DiscardHandler))
	if _, err := c.CountByStatus(context.Background()); err == nil {
		t.Fatal("a failed first count returned no error")
	}
	// Nothing cached: the next page counts again.
	src.mu.Lock()
	src.err = nil
	src.mu.Unlock()
	src.answers <- map[string]int{"needs_reauth": 3}
	got, err := c.CountByStatus(context.Background())
	if err != nil || got["needs_reauth"] != 3 || src.callCount() != 2 {
		t.Fatalf("after a failed first count: %v, %v after %d calls", got, err, src.callCount())
	}
}
