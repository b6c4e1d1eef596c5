package metrics

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/store"
)

// fakeCounter answers CountConnections with whatever the test set.
type fakeCounter struct {
	mu     sync.Mutex
	counts map[store.ConnectionGroup]int
	err    error
	calls  int
	// gate, if set, holds every count until it is closed.
	gate chan struct{}
	// slow, if set, runs during every count (a test advances its clock).
	slow func()
}

func (f *fakeCounter) CountConnections(ctx context.Context) (map[store.ConnectionGroup]int, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.slow != nil {
		f.slow()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := make(map[store.ConnectionGroup]int, len(f.counts))
	for g, n := range f.counts {
		out[g] = n
	}
	return out, nil
}

func (f *fakeCounter) set(counts map[store.ConnectionGroup]int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts, f.err = counts, err
}

func (f *fakeCounter) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func grp(provider, status string) store.ConnectionGroup {
	return store.ConnectionGroup{Provider: provider, Status: status}
}

func newCounted(t *testing.T, fc *fakeCounter, clk *fakeclock.Clock, log *slog.Logger) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	_, err := New(Options{
		Registerer:    reg,
		Providers:     []string{"acme", "beta"},
		Connections:   fc,
		CountCacheFor: 5 * time.Second,
		Now:           clk.Now,
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

const connGauge = "tokenbroker_connections"

// TestConnectionsGauge: configured providers report every status, at zero
// when they have none; counts of a provider no longer configured still
// show.
func TestConnectionsGauge(t *testing.T) {
	fc := &fakeCounter{counts: map[store.ConnectionGroup]int{
		grp("acme", "active"):       7,
		grp("acme", "failing"):      2,
		grp("acme", "needs_reauth"): 1,
		grp("gone", "revoked"):      4,
	}}
	reg := newCounted(t, fc, fakeclock.New(time.Unix(1e9, 0)), nil)
	fams := families(t, reg)
	want := map[store.ConnectionGroup]float64{
		grp("acme", "active"):       7,
		grp("acme", "failing"):      2,
		grp("acme", "needs_reauth"): 1,
		grp("acme", "revoked"):      0,
		grp("beta", "active"):       0,
		grp("beta", "failing"):      0,
		grp("beta", "needs_reauth"): 0,
		grp("beta", "revoked"):      0,
		grp("gone", "revoked"):      4,
	}
	for g, v := range want {
		if got := value(t, fams, connGauge, labels{"provider", g.Provider, "status", g.Status}); got != v {
			t.Errorf("%v = %v, want %v", g, got, v)
		}
	}
	if n := seriesCount(fams, connGauge); n != len(want) {
		t.Errorf("%d series, want %d", n, len(want))
	}
	if fams[connGauge].GetType().String() != "GAUGE" {
		t.Errorf("type %v, want GAUGE", fams[connGauge].GetType())
	}
}

// TestConnectionsCached: scrapes within the cache period reuse one count;
// the next one after it counts again.
func TestConnectionsCached(t *testing.T) {
	fc := &fakeCounter{counts: map[store.ConnectionGroup]int{grp("acme", "active"): 1}}
	clk := fakeclock.New(time.Unix(1e9, 0))
	reg := newCounted(t, fc, clk, nil)

	families(t, reg)
	fc.set(map[store.ConnectionGroup]int{grp("acme", "active"): 2}, nil)
	clk.Advance(4 * time.Second)
	fams := families(t, reg)
	if fc.callCount() != 1 {
		t.Errorf("two scrapes 4s apart counted %d times, want 1", fc.callCount())
	}
	if v := value(t, fams, connGauge, labels{"provider", "acme", "status", "active"}); v != 1 {
		t.Errorf("cached value %v, want 1", v)
	}

	clk.Advance(time.Second)
	fams = families(t, reg)
	if fc.callCount() != 2 {
		t.Errorf("scrape after the cache period: %d counts, want 2", fc.callCount())
	}
	if v := value(t, fams, connGauge, labels{"provider", "acme", "status", "active"}); v != 2 {
		t.Errorf("fresh value %v, want 2", v)
	}
}

// TestConnectionsCacheScalesWithCost: a count that takes long (a large
// table) is reused for ten times its duration, not the 5-second default,
// so counting never takes more than a tenth of the time.
func TestConnectionsCacheScalesWithCost(t *testing.T) {
	clk := fakeclock.New(time.Unix(1e9, 0))
	fc := &fakeCounter{counts: map[store.ConnectionGroup]int{grp("acme", "active"): 1}}
	fc.slow = func() { clk.Advance(3 * time.Second) }
	reg := newCounted(t, fc, clk, nil)

	families(t, reg) // counts, taking 3 s
	clk.Advance(26 * time.Second)
	families(t, reg)
	if n := fc.callCount(); n != 1 {
		t.Errorf("scrape 26 s after a 3-second count: %d counts, want 1 (reused for 30 s)", n)
	}
	clk.Advance(time.Second)
	families(t, reg)
	if n := fc.callCount(); n != 2 {
		t.Errorf("scrape 30 s after a 3-second count began: %d counts, want 2", n)
	}
}

// TestConnectionsCountFails: a failed count keeps the last known values,
// counts the error, is logged, and is itself cached; the next good count
// replaces the values.
func TestConnectionsCountFails(t *testing.T) {
	fc := &fakeCounter{counts: map[store.ConnectionGroup]int{grp("acme", "needs_reauth"): 3}}
	clk := fakeclock.New(time.Unix(1e9, 0))
	var logs bytes.Buffer
	reg := newCounted(t, fc, clk, slog.New(slog.NewTextHandler(&logs, nil)))
	errSeries := labels{"operation", "count_connections"}
	reauth := labels{"provider", "acme", "status", "needs_reauth"}

	fams := families(t, reg)
	if v := value(t, fams, "tokenbroker_store_errors_total", errSeries); v != 0 {
		t.Fatalf("errors before any failure: %v", v)
	}

	fc.set(nil, errors.New("store/sqlite: count connections: store: database unavailable"))
	clk.Advance(6 * time.Second)
	fams = families(t, reg)
	if v := value(t, fams, connGauge, reauth); v != 3 {
		t.Errorf("after a failed count needs_reauth = %v, want the last known 3", v)
	}
	if v := value(t, fams, "tokenbroker_store_errors_total", errSeries); v != 1 {
		t.Errorf("store errors = %v, want 1", v)
	}
	if !bytes.Contains(logs.Bytes(), []byte("cannot count connections")) {
		t.Error("the failed count was not logged")
	}

	// Within the cache period the failure is not retried.
	clk.Advance(time.Second)
	families(t, reg)
	if fc.callCount() != 2 {
		t.Errorf("%d counts, want 2: a failed count is cached too", fc.callCount())
	}

	fc.set(map[store.ConnectionGroup]int{grp("acme", "needs_reauth"): 5}, nil)
	clk.Advance(5 * time.Second)
	fams = families(t, reg)
	if v := value(t, fams, connGauge, reauth); v != 5 {
		t.Errorf("after recovery needs_reauth = %v, want 5", v)
	}
	if v := value(t, fams, "tokenbroker_store_errors_total", errSeries); v != 1 {
		t.Errorf("store errors after recovery = %v, want still 1", v)
	}
}

// TestConnectionsNeverCounted: with no good count yet, the gauge is absent
// (not zeros, which would claim there are no connections) and the error is
// counted.
func TestConnectionsNeverCounted(t *testing.T) {
	fc := &fakeCounter{err: errors.New("store/postgres: count connections: store: database unavailable")}
	reg := newCounted(t, fc, fakeclock.New(time.Unix(1e9, 0)), nil)
	fams := families(t, reg)
	if n := seriesCount(fams, connGauge); n != 0 {
		t.Errorf("%d connection series without any count, want 0", n)
	}
	if v := value(t, fams, "tokenbroker_store_errors_total", labels{"operation", "count_connections"}); v != 1 {
		t.Errorf("store errors = %v, want 1", v)
	}
}

// TestConcurrentScrapesCountOnce: scrapes that arrive while a count runs
// wait for it rather than starting their own.
func TestConcurrentScrapesCountOnce(t *testing.T) {
	fc := &fakeCounter{counts: map[store.ConnectionGroup]int{grp("acme", "active"): 9}, gate: make(chan struct{})}
	reg := newCounted(t, fc, fakeclock.New(time.Unix(1e9, 0)), nil)
	const scrapers = 8
	var wg sync.WaitGroup
	results := make([]float64, scrapers)
	for i := range scrapers {
		wg.Go(func() {
			mfs, err := reg.Gather()
			if err != nil {
				t.Errorf("Gather: %v", err)
				return
			}
			fams := map[string]*dtoFamily{}
			for _, mf := range mfs {
				fams[mf.GetName()] = mf
			}
			if m, ok := series(fams, connGauge, labels{"provider", "acme", "status", "active"}); ok {
				results[i] = m.GetGauge().GetValue()
			}
		})
	}
	close(fc.gate)
	wg.Wait()
	if fc.callCount() != 1 {
		t.Errorf("%d concurrent scrapes made %d counts, want 1", scrapers, fc.callCount())
	}
	for i, v := range results {
		if v != 9 {
			t.Errorf("scraper %d saw %v, want 9", i, v)
		}
	}
}
