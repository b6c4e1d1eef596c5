package app

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// dashboardCountsTTL is how old the dashboard's per-status summary may be.
// Counting reads every connection row (a GROUP BY over the table): about a
// second per million rows (BENCHMARKS.md, "A million connections"), too
// much to pay on every page.
const dashboardCountsTTL = 15 * time.Second

// statusCounter is what the dashboard's summary is counted by.
type statusCounter interface {
	CountByStatus(ctx context.Context) (map[string]int, error)
}

// countCache serves the dashboard's counts from memory: a fresh count is
// taken at most once per ttl, in the background once there is a count to
// show meanwhile, so no page waits for a count but the first. The counts
// on the dashboard may lag writes by up to ttl plus one count's duration
// (docs/operations.md).
type countCache struct {
	src statusCounter
	ttl time.Duration
	now func() time.Time
	log *slog.Logger

	mu       sync.Mutex
	counts   map[string]int // nil until a count succeeded
	at       time.Time      // when counts was taken
	counting bool           // a background count is running
	// counted, when set, is called after each background count (tests).
	counted func()
}

var _ statusCounter = (*countCache)(nil)

func newCountCache(src statusCounter, ttl time.Duration, now func() time.Time, log *slog.Logger) *countCache {
	return &countCache{src: src, ttl: ttl, now: now, log: log}
}

// CountByStatus returns the cached counts, starting a background recount
// when they are older than the ttl; with no counts yet it counts now.
func (c *countCache) CountByStatus(ctx context.Context) (map[string]int, error) {
	c.mu.Lock()
	if c.counts == nil {
		c.mu.Unlock()
		return c.count(ctx, false)
	}
	out := maps.Clone(c.counts)
	if age := c.now().Sub(c.at); (age >= c.ttl || age < 0) && !c.counting {
		c.counting = true
		go func() {
			// Not the page's context: the page is answered meanwhile.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if _, err := c.count(ctx, true); err != nil {
				c.log.WarnContext(ctx, "dashboard: counting connections", "error", err)
			}
			if c.counted != nil {
				c.counted()
			}
		}()
	}
	c.mu.Unlock()
	return out, nil
}

// count counts and keeps the result; background says it is the
// background count, which a failure or success ends.
func (c *countCache) count(ctx context.Context, background bool) (map[string]int, error) {
	at := c.now()
	counts, err := c.src.CountByStatus(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if background {
		c.counting = false
	}
	if err != nil {
		return nil, err
	}
	if c.counts == nil || !at.Before(c.at) {
		c.counts, c.at = counts, at
	}
	return maps.Clone(counts), nil
}
