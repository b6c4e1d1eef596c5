// Package load is a small closed-loop HTTP load generator for tokenbroker's
// benchmarks: N clients, each sending its next request as soon as the last
// answered, for a fixed time or count. It records every latency so medians
// and tails are exact, not estimated.
package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Result is one load run's outcome.
type Result struct {
	Name      string
	Requests  int
	Errors    int
	Elapsed   time.Duration
	Latencies []time.Duration // sorted
}

// RPS is completed requests per second.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Quantile returns the q-th latency quantile (0 < q <= 1).
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(r.Latencies))+0.5) - 1
	i = max(0, min(i, len(r.Latencies)-1))
	return r.Latencies[i]
}

func (r Result) String() string {
	return fmt.Sprintf("%-28s %9.0f req/s  p50 %7.1fµs  p99 %7.1fµs  errors %d/%d",
		r.Name, r.RPS(), us(r.Quantile(0.5)), us(r.Quantile(0.99)), r.Errors, r.Requests)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Client returns an HTTP client that keeps enough idle connections for
// the given concurrency, so the run measures requests, not handshakes.
func Client(concurrency int) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     time.Minute,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// Run sends requests made by newReq from concurrency clients for duration,
// after a warm-up of warm. A response with a status other than want counts
// as an error. The body is read fully and closed, as a real client would.
func Run(ctx context.Context, name string, c *http.Client, concurrency int, warm, duration time.Duration, want int, newReq func() *http.Request) Result {
	if warm > 0 {
		runFor(ctx, c, concurrency, warm, want, newReq)
	}
	lat, errs, elapsed := runFor(ctx, c, concurrency, duration, want, newReq)
	slices.Sort(lat)
	return Result{Name: name, Requests: len(lat), Errors: errs, Elapsed: elapsed, Latencies: lat}
}

func runFor(ctx context.Context, c *http.Client, concurrency int, d time.Duration, want int, newReq func() *http.Request) ([]time.Duration, int, time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu   sync.Mutex
		all  []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<14)
			bad := 0
			for ctx.Err() == nil {
				req := newReq()
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						bad++
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(t0))
				if resp.StatusCode != want {
					bad++
				}
			}
			mu.Lock()
			all = append(all, lat...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, errs, time.Since(start)
}
