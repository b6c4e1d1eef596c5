package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/bench/load"
	"github.com/tokenbroker/tokenbroker/config"
)

// benchProxy compares tokenbroker's /v1/proxy with a plain
// httputil.ReverseProxy (and optionally the upstream itself) for every
// client count and response size asked for, and then with server-sent
// event streams. Targets alternate within every round.
func benchProxy(args []string) error {
	var (
		clients, sizes string
		direct, sse    bool
		sseEvents      int
		sseGap         time.Duration
	)
	// -clients runs every count in turn; without it, -c.
	o, err := parse("proxy", args, func(fs *flag.FlagSet) {
		fs.StringVar(&clients, "clients", "", "comma-separated client counts, such as 32,256 (default: -c)")
		fs.StringVar(&sizes, "size", "small", "comma-separated response sizes: small (73 bytes of JSON), 64k")
		fs.BoolVar(&direct, "direct", false, "also measure requests straight to the upstream")
		fs.BoolVar(&sse, "sse", false, "also measure a text/event-stream answer")
		fs.IntVar(&sseEvents, "sse-events", 50, "events per stream")
		fs.DurationVar(&sseGap, "sse-gap", time.Millisecond, "the upstream's pause after the first event of a stream")
	})
	if err != nil {
		return err
	}
	counts := []int{o.concurrency}
	if clients != "" {
		counts = counts[:0]
		for f := range strings.SplitSeq(clients, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("-clients: %q is not a client count", f)
			}
			counts = append(counts, n)
		}
	}
	var paths []string
	for f := range strings.SplitSeq(sizes, ",") {
		switch strings.TrimSpace(f) {
		case "small":
			paths = append(paths, "/v1/items?page=1")
		case "64k":
			paths = append(paths, "/v1/big?page=1")
		default:
			return fmt.Errorf("-size: %q is not small or 64k", f)
		}
	}
	up, tb, key, cleanup, err := startPair(o.bin)
	if err != nil {
		return err
	}
	defer cleanup()
	rp, err := start(nil, self(), "serve-revproxy", "-target", "http://"+up.addr)
	if err != nil {
		return err
	}
	defer rp.stop()
	// The same, with a pool of copy buffers as tokenbroker's proxy has:
	// the stronger baseline, to which the ratios refer.
	rpPool, err := start(nil, self(), "serve-revproxy", "-target", "http://"+up.addr, "-pool")
	if err != nil {
		return err
	}
	defer rpPool.stop()
	if err := importConn(load.Client(1), tb.addr, key, "c1"); err != nil {
		return err
	}
	for _, n := range counts {
		o.concurrency = n
		c := load.Client(n)
		for _, path := range paths {
			fmt.Printf("Proxy %s: %d clients, %v x %d rounds\n", path, n, o.duration, o.rounds)
			targets := []target{
				{"ReverseProxy+BufferPool", "http://" + rpPool.addr + "/api" + path, "upstream-token"},
				{"tokenbroker /v1/proxy", "http://" + tb.addr + "/v1/proxy/c1" + path, key},
				{"httputil.ReverseProxy", "http://" + rp.addr + "/api" + path, "upstream-token"},
			}
			if direct {
				targets = append(targets, target{"direct to upstream", "http://" + up.addr + "/api" + path, "upstream-token"})
			}
			res := runRounds(c, o, targets)
			for _, base := range []load.Result{res[0], res[2]} {
				tbr := res[1]
				fmt.Printf("RESULT proxy %s clients=%d  tokenbroker / %s: throughput %.3f  p50 %+.1fµs  p99 ratio %.2f  (load %s)\n",
					path, n, base.Name, tbr.RPS()/base.RPS(), float64(tbr.Quantile(0.5)-base.Quantile(0.5))/1e3,
					float64(tbr.Quantile(0.99))/float64(base.Quantile(0.99)), loadAvg())
			}
		}
		if sse {
			fmt.Printf("Proxy SSE: %d clients, %d events per stream, %v x %d rounds\n", n, sseEvents, o.duration, o.rounds)
			path := fmt.Sprintf("/v1/sse?n=%d&gap=%s", sseEvents, sseGap)
			res := runStreamRounds(c, o, sseEvents, []target{
				{"ReverseProxy+BufferPool SSE", "http://" + rpPool.addr + "/api" + path, "upstream-token"},
				{"tokenbroker /v1/proxy SSE", "http://" + tb.addr + "/v1/proxy/c1" + path, key},
			})
			fmt.Printf("RESULT proxy SSE clients=%d  tokenbroker/ReverseProxy events/s %.3f  first event p50 %+.1fµs p99 ratio %.2f  (load %s)\n",
				n, res[1].eventsPerSec()/res[0].eventsPerSec(),
				float64(res[1].first.Quantile(0.5)-res[0].first.Quantile(0.5))/1e3,
				float64(res[1].first.Quantile(0.99))/float64(res[0].first.Quantile(0.99)), loadAvg())
		}
	}
	return nil
}

// streamResult pools one target's streams: first is the time to the
// first event, total the time to the end of the stream.
type streamResult struct {
	name         string
	first, total load.Result
	events       int
	elapsed      time.Duration
	errors       int
}

func (r streamResult) eventsPerSec() float64 { return float64(r.events) / r.elapsed.Seconds() }

// runStreamRounds is runRounds for event streams: each client opens a
// stream, reads every event and opens the next.
func runStreamRounds(c *http.Client, o opts, want int, targets []target) []streamResult {
	pooled := make([]streamResult, len(targets))
	for round := range o.rounds {
		for i, t := range targets {
			runStreams(c, o.concurrency, o.warm, want, t) // warm-up, not counted
			r := runStreams(c, o.concurrency, o.duration, want, t)
			fmt.Printf("  round %d  %-28s %8.0f events/s  %6.0f streams/s  first event p50 %7.1fµs p99 %7.1fµs  stream p50 %7.1fµs  errors %d\n",
				round+1, t.name, r.eventsPerSec(), float64(len(r.total.Latencies))/r.elapsed.Seconds(),
				micros(r.first.Quantile(0.5)), micros(r.first.Quantile(0.99)), micros(r.total.Quantile(0.5)), r.errors)
			p := &pooled[i]
			p.name = t.name
			p.events += r.events
			p.elapsed += r.elapsed
			p.errors += r.errors
			p.first.Latencies = append(p.first.Latencies, r.first.Latencies...)
			p.total.Latencies = append(p.total.Latencies, r.total.Latencies...)
		}
	}
	fmt.Println("pooled:")
	for i := range pooled {
		p := &pooled[i]
		slices.Sort(p.first.Latencies)
		slices.Sort(p.total.Latencies)
		fmt.Printf("  %-28s %8.0f events/s  first event p50 %7.1fµs p99 %7.1fµs  stream p50 %7.1fµs p99 %7.1fµs  errors %d\n",
			p.name, p.eventsPerSec(), micros(p.first.Quantile(0.5)), micros(p.first.Quantile(0.99)),
			micros(p.total.Quantile(0.5)), micros(p.total.Quantile(0.99)), p.errors)
	}
	return pooled
}

func runStreams(c *http.Client, concurrency int, d time.Duration, want int, t target) streamResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu  sync.Mutex
		out = streamResult{name: t.name}
		wg  sync.WaitGroup
	)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first, total []time.Duration
			events, bad := 0, 0
			for ctx.Err() == nil {
				req, _ := http.NewRequest(http.MethodGet, t.url, nil)
				req.Header.Set("Authorization", "Bearer "+t.key)
				req.Header.Set("Accept", "text/event-stream")
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						bad++
					}
					continue
				}
				br := bufio.NewReader(resp.Body)
				n := 0
				var t1 time.Duration
				for {
					line, err := br.ReadSlice('\n')
					if bytes.HasPrefix(line, []byte("data:")) {
						if n == 0 {
							t1 = time.Since(t0)
						}
						n++
					}
					if err != nil {
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || n != want {
					bad++
					continue
				}
				first = append(first, t1)
				total = append(total, time.Since(t0))
				events += n
			}
			mu.Lock()
			out.first.Latencies = append(out.first.Latencies, first...)
			out.total.Latencies = append(out.total.Latencies, total...)
			out.events += events
			out.errors += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	slices.Sort(out.first.Latencies)
	slices.Sort(out.total.Latencies)
	return out
}

// benchAPI is the upstream's API: a small JSON answer, a 64 KiB one, and
// an event stream (n events; after the first, a pause of gap, so a proxy
// that holds events back shows in the first event's latency).
func benchAPI(small []byte) http.HandlerFunc {
	big := bytes.Repeat([]byte("x"), 64<<10)
	event := []byte("data: {\"seq\":0,\"text\":\"" + strings.Repeat("e", 80) + "\"}\n\n")
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/big"):
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(big)
		case strings.HasSuffix(r.URL.Path, "/sse"):
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			gap, _ := time.ParseDuration(r.URL.Query().Get("gap"))
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			rc := http.NewResponseController(w)
			for i := range n {
				w.Write(event)
				rc.Flush()
				if i == 0 && gap > 0 {
					time.Sleep(gap)
				}
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write(small)
		}
	}
}

// serveRevProxy is the baseline: a plain httputil.ReverseProxy with the
// transport tokenbroker's proxy has (internal/app: a clone of
// http.DefaultTransport, MaxIdleConnsPerHost 64, ResponseHeaderTimeout
// proxy.timeout's default), so that neither side churns sockets.
func serveRevProxy(args []string) error {
	fs := flag.NewFlagSet("serve-revproxy", flag.ContinueOnError)
	target := fs.String("target", "", "upstream base URL")
	pool := fs.Bool("pool", false, "lend the proxy its copy buffers from a pool, as tokenbroker does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.ResponseHeaderTimeout = config.DefaultProxyTimeout
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: tr}
	if *pool {
		rp.BufferPool = &bufferPool{}
	}
	ln, err := listen()
	if err != nil {
		return err
	}
	return http.Serve(ln, rp)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// bufferPool is server/proxy.go's pool of 32 KiB copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if p, ok := b.p.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != 32<<10 {
		return
	}
	buf = buf[:32<<10]
	b.p.Put(&buf)
}

// loadAvg is the first field of /proc/loadavg, for the record.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
