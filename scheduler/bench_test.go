package scheduler_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/pgtest"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/postgres"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// The benchmarks measure whole runs, not b.N iterations; run them once:
//
//	go test -run '^$' -bench . -benchtime 1x ./scheduler/
//
// TOKENBROKER_BENCH_N sets the backlog (default 100000),
// TOKENBROKER_BENCH_LAG_SECONDS the steady-state run (default 60).

type schedStore interface {
	store.Backend
	store.Scheduling
}

type benchEnv struct {
	store    schedStore
	broker   *broker.Broker
	provider *fakeProvider
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func newBenchEnv(b *testing.B, backend string) *benchEnv {
	b.Helper()
	ctx := b.Context()
	dir := b.TempDir()
	var st schedStore
	switch backend {
	case "sqlite":
		s, err := sqlite.Open(ctx, filepath.Join(dir, "tb.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st = s
	case "postgres":
		s, err := postgres.Open(ctx, pgtest.FreshDatabase(b), postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st = s
	}
	b.Cleanup(func() { _ = st.Close() })
	ring, _, err := seal.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		b.Fatal(err)
	}
	fp := newFakeProvider(time.Hour)
	srv := httptest.NewServer(fp)
	b.Cleanup(srv.Close)
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID: "fake-client", ClientSecret: "fake-secret", TokenURL: srv.URL + "/token",
		AuthStyle: oauth.AuthStyleHeader, HTTPClient: client,
	})
	if err != nil {
		b.Fatal(err)
	}
	br, err := broker.New(broker.Options{
		Store: st, Sealer: ring, Owner: "bench",
		Providers: map[string]broker.Provider{"acme": {Endpoint: ep, Policy: lifecycle.Policy{Window: 5 * time.Minute}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{store: st, broker: br, provider: fp}
}

// fill imports n connections; due(i) is when connection i should be
// refreshed. Its access token expires four minutes later, inside the
// five-minute refresh window, so the broker refreshes it when asked then.
func (e *benchEnv) fill(b *testing.B, n int, due func(i int) time.Time) {
	b.Helper()
	ctx := b.Context()
	workers := 1
	if _, ok := e.store.(*postgres.Store); ok {
		workers = 8
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				id := fmt.Sprintf("c%07d", i)
				at := due(i)
				access, refresh := e.provider.grant(id, at.Add(4*time.Minute))
				if _, err := e.broker.CreateConnection(ctx, broker.Import{
					ID: id, Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresAt: at.Add(4 * time.Minute),
				}); err != nil {
					errs <- err
					return
				}
				// The broker jitters the schedule; the benchmark wants it exact.
				if _, err := e.store.UpdateConnection(ctx, id, func(c store.Connection) (store.Connection, []store.Event, error) {
					c.NextRefreshAt = at
					return c, nil, nil
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

type usage struct {
	cpu    time.Duration
	maxRSS int64 // bytes
}

func rusage(b *testing.B) usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return usage{
		cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		maxRSS: ru.Maxrss * 1024, // Linux reports KiB
	}
}

// BenchmarkSchedulerBacklog drains a backlog of due connections with no
// rate limit: the scheduler's ceiling, with the broker's whole refresh path
// (lease, provider call over loopback HTTP, sealed save) per connection.
// CPU includes the in-process fake provider.
func BenchmarkSchedulerBacklog(b *testing.B) {
	n := envInt("TOKENBROKER_BENCH_N", 100000)
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			e := newBenchEnv(b, backend)
			past := time.Now().Add(-time.Minute)
			e.fill(b, n, func(int) time.Time { return past })
			s, err := scheduler.New(scheduler.Options{Store: e.store, Refresher: e.broker, Owner: "bench", Concurrency: 16, BatchSize: 500})
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			before := rusage(b)
			b.ResetTimer()
			start := time.Now()
			var st scheduler.CycleStats
			total, failed := 0, 0
			for {
				st, err = s.RunOnce(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				total += st.OK
				failed += st.Failed
				if st.Claimed == 0 {
					break
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			after := rusage(b)
			if total != n || failed != 0 || e.provider.calls != n {
				b.Fatalf("%d of %d refreshed, %d failed, %d provider calls", total, n, failed, e.provider.calls)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "refreshes/s")
			b.ReportMetric((after.cpu-before.cpu).Seconds()*1000/float64(n), "cpu-s/1000refreshes")
			b.ReportMetric(float64(after.maxRSS)/(1<<20), "maxRSS-MiB")
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
			b.ReportMetric(elapsed.Seconds(), "s-total")
		})
	}
}

// BenchmarkSchedulerSteadyLag feeds the scheduler connections coming due at
// 280 a second, ten times what 100,000 one-hour tokens need, and reports
// the lag (now minus the oldest due connection's NextRefreshAt) it
// observed at the start of each one-second cycle.
func BenchmarkSchedulerSteadyLag(b *testing.B) {
	const rate = 280
	secs := envInt("TOKENBROKER_BENCH_LAG_SECONDS", 60)
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			e := newBenchEnv(b, backend)
			n := rate * secs
			// Due times start after the fill is done: estimate 2ms a row.
			begin := time.Now().Add(time.Duration(n)*2*time.Millisecond + 5*time.Second)
			e.fill(b, n, func(i int) time.Time { return begin.Add(time.Duration(i) * time.Second / rate) })
			if d := time.Until(begin); d < 0 {
				b.Logf("the fill overran the estimate by %v; the first connections start late", -d)
			}
			lags := &lagRecorder{}
			s, err := scheduler.New(scheduler.Options{Store: e.store, Refresher: e.broker, Owner: "bench", Metrics: lags})
			if err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Until(begin))
			lags.reset()
			before := rusage(b)
			ctx, cancel := context.WithCancel(b.Context())
			done := make(chan struct{})
			go func() { defer close(done); _ = s.Run(ctx) }()
			deadline := begin.Add(time.Duration(secs)*time.Second + 10*time.Second)
			for time.Now().Before(deadline) && e.provider.callCount() < n {
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			<-done
			after := rusage(b)
			if c := e.provider.callCount(); c != n {
				b.Fatalf("%d of %d connections refreshed", c, n)
			}
			got := lags.sorted()
			b.ReportMetric(float64(len(got)), "cycles")
			b.ReportMetric(got[len(got)/2].Seconds(), "lag-p50-s")
			b.ReportMetric(got[len(got)*99/100].Seconds(), "lag-p99-s")
			b.ReportMetric(got[len(got)-1].Seconds(), "lag-max-s")
			b.ReportMetric((after.cpu-before.cpu).Seconds()/float64(secs), "cpu-s/s")
			b.ReportMetric(float64(after.maxRSS)/(1<<20), "maxRSS-MiB")
		})
	}
}

type lagRecorder struct {
	mu   sync.Mutex
	lags []time.Duration
}

func (l *lagRecorder) ScheduledRefresh(string, string) {}
func (l *lagRecorder) Claimed(int)                     {}
func (l *lagRecorder) Lag(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lags = append(l.lags, d)
}

func (l *lagRecorder) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lags = nil
}

func (l *lagRecorder) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.lags)
	slices.Sort(out)
	if len(out) == 0 {
		out = []time.Duration{0}
	}
	return out
}
