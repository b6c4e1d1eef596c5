package main

// tbbench million: a million connections, on SQLite and on PostgreSQL.
//
// For each backend it runs two phases against one database:
//
//  1. the server with its scheduler off: resident memory empty, then
//     `tokenbroker import` of -n connections from JSON lines on stdin
//     (the bulk path, POST /v1/connections:batch), resident memory once
//     idle, token reads of random connections, list and dashboard pages
//     with filters and deep pagination;
//  2. the server restarted with its scheduler on: start-up time over the
//     full database, the steady-state CPU of refreshing connections whose
//     expiries are spread evenly over -lifetime (n/lifetime refreshes per
//     second against a rotating provider in its own process), and on
//     PostgreSQL a database outage of -outage (the database is stopped and
//     started with -pg-stop/-pg-start) with the time until the scheduler's
//     lag is back to normal and the count of tokens that expired meanwhile.
//
// Everything listens on 127.0.0.1; BENCHMARKS.md has the commands.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

type millionOpts struct {
	bin, pg, pgStop, pgStart     string
	n, reads, listRounds, conc   int
	batch, parallel              int
	lifetime, offset, idle       time.Duration
	steady, outage, recoverLimit time.Duration
	sqlite                       bool
	lagNormal                    time.Duration
	schedConcurrency, schedBatch int
	skipPhase2, keepData         bool
}

func benchMillion(args []string) error {
	if len(args) > 0 && args[0] == "serve-provider" {
		return serveMillionProvider(args[1:])
	}
	var o millionOpts
	fs := flag.NewFlagSet("million", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "./tokenbroker", "tokenbroker binary")
	fs.IntVar(&o.n, "n", 1_000_000, "connections to import")
	fs.BoolVar(&o.sqlite, "sqlite", true, "run on SQLite")
	fs.StringVar(&o.pg, "pg", "", "PostgreSQL server (postgres://…); the database tbbench_million is created on it afresh; empty: no PostgreSQL run")
	fs.StringVar(&o.pgStop, "pg-stop", "", "shell command that stops the PostgreSQL server (for the outage)")
	fs.StringVar(&o.pgStart, "pg-start", "", "shell command that starts it again")
	fs.DurationVar(&o.outage, "outage", 10*time.Minute, "how long the database is down (0: no outage)")
	fs.DurationVar(&o.recoverLimit, "recover-limit", 30*time.Minute, "give up waiting for the backlog after this long")
	fs.DurationVar(&o.lagNormal, "lag-normal", 0, "scheduler lag counted as normal after the outage (0: the largest lag seen in the steady state, at least 5s)")
	fs.IntVar(&o.batch, "batch", 1000, "connections per import request")
	fs.IntVar(&o.parallel, "parallel", 2, "import requests in flight")
	fs.DurationVar(&o.lifetime, "lifetime", time.Hour, "access token lifetime; expiries are spread evenly over it")
	fs.DurationVar(&o.offset, "offset", 8*time.Minute, "the first expiry is this long after the import starts (so that phase 1 runs before refreshes are due)")
	fs.DurationVar(&o.idle, "idle", 60*time.Second, "wait before reading an idle server's memory")
	fs.IntVar(&o.reads, "reads", 20000, "token reads of random connections")
	fs.IntVar(&o.conc, "c", 8, "concurrent token readers")
	fs.IntVar(&o.listRounds, "list-rounds", 10, "requests per list or dashboard query")
	fs.DurationVar(&o.steady, "steady", 5*time.Minute, "steady-state measuring time")
	fs.IntVar(&o.schedConcurrency, "sched-concurrency", 0, "scheduler.concurrency (0: the default)")
	fs.IntVar(&o.schedBatch, "sched-batch", 0, "scheduler.batch_size (0: the default)")
	fs.BoolVar(&o.skipPhase2, "skip-phase2", false, "stop after phase 1")
	fs.BoolVar(&o.keepData, "keep", false, "keep the data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Printf("A million connections: n=%d, lifetime %v (≈ %.0f refreshes/s), load %s\n",
		o.n, o.lifetime, float64(o.n)/o.lifetime.Seconds(), loadavg())
	if o.sqlite {
		if err := runMillion(o, "sqlite", ""); err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
	}
	if o.pg != "" {
		dsn, err := freshDatabase(o.pg, "tbbench_million")
		if err != nil {
			return err
		}
		if err := runMillion(o, "postgres", dsn); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
	}
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// freshDatabase drops and creates database name on the server of dsn and
// returns its DSN.
func freshDatabase(dsn, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
		return "", err
	}
	if _, err := c.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		return "", err
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// millionServer is one tokenbroker process of the run.
type millionServer struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, for the bootstrap API key
	waited chan struct{}
	addr   string
	key    string
}

func writeMillionConfig(dir, addr, database, upstream string, scheduler bool, o millionOpts) (string, error) {
	cfg := fmt.Sprintf(`listen: %[3]s
data_dir: %[1]s
database: %[4]s
encryption_keys_file: %[1]s/keys
log_level: warn
scheduler:
  disabled: %[5]v
`, dir, upstream, addr, database, !scheduler)
	if o.schedConcurrency > 0 {
		cfg += fmt.Sprintf("  concurrency: %d\n", o.schedConcurrency)
	}
	if o.schedBatch > 0 {
		cfg += fmt.Sprintf("  batch_size: %d\n", o.schedBatch)
	}
	cfg += "providers:\n"
	// Three providers on the one upstream, so that list filters select
	// nine tenths (bench), a tenth (bench2) or none (bench3) of the rows.
	for _, name := range []string{"bench", "bench2", "bench3"} {
		cfg += fmt.Sprintf(`  - name: %s
    token_url: http://%s/token
    client_id: bench
    client_secret_env: TBBENCH_CLIENT_SECRET
    api_base_url: http://%s/api
`, name, upstream, upstream)
	}
	path := filepath.Join(dir, fmt.Sprintf("tokenbroker-%v.yaml", scheduler))
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// startMillionServer starts tokenbroker and waits (up to 10 minutes: a
// start over a million rows is part of what is measured) for /healthz.
func startMillionServer(bin, cfgPath, addr, logPath string) (*millionServer, time.Duration, error) {
	t0 := time.Now()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "TBBENCH_CLIENT_SECRET=bench-secret")
	stdout, _ := cmd.StdoutPipe()
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, 0, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	srv := &millionServer{cmd: cmd, addr: addr, lines: make(chan string, 64), waited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case srv.lines <- sc.Text():
			default:
			}
		}
	}()
	exited := srv.waited
	go func() { _ = cmd.Wait(); close(exited) }()
	c := &http.Client{Timeout: 2 * time.Second}
	for time.Since(t0) < 10*time.Minute {
		select {
		case <-exited:
			return nil, 0, errors.New("tokenbroker exited while starting")
		default:
		}
		resp, err := c.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return srv, time.Since(t0), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, 0, errors.New("tokenbroker did not become healthy in 10 minutes")
}

func (s *millionServer) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.waited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.waited
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func runMillion(o millionOpts, backend, dsn string) error {
	fmt.Printf("\n== %s (load %s)\n", backend, loadavg())
	dir, err := os.MkdirTemp("", "tbbench-million-")
	if err != nil {
		return err
	}
	if !o.keepData {
		defer os.RemoveAll(dir)
	} else {
		fmt.Printf("data directory: %s\n", dir)
	}
	database := dsn
	if backend == "sqlite" {
		database = "sqlite:" + dir + "/tokenbroker.db"
	}
	up, err := start(nil, self(), "million", "serve-provider")
	if err != nil {
		return err
	}
	defer up.stop()
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	cfg1, err := writeMillionConfig(dir, addr, database, up.addr, false, o)
	if err != nil {
		return err
	}
	cfg2, err := writeMillionConfig(dir, addr, database, up.addr, true, o)
	if err != nil {
		return err
	}

	// Phase 1: scheduler off.
	log1, log2 := filepath.Join(dir, "phase1.log"), filepath.Join(dir, "phase2.log")
	defer func() { summarizeLog(log1); summarizeLog(log2) }()
	srv, startup, err := startMillionServer(o.bin, cfg1, addr, log1)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.stop()
		}
	}()
	srv.key, err = bootstrapKey(srv.lines)
	if err != nil {
		return err
	}
	fmt.Printf("start-up, empty database: %v\n", startup.Round(time.Millisecond))
	time.Sleep(min(o.idle, 20*time.Second))
	empty, _ := rss(srv.cmd.Process.Pid)
	fmt.Printf("resident memory, empty server: %.1f MB\n", empty/1e6)

	t0 := time.Now()
	cpu0, _ := cpuTicks(srv.cmd.Process.Pid)
	if err := runImport(o, srv, t0); err != nil {
		return err
	}
	elapsed := time.Since(t0)
	cpu1, _ := cpuTicks(srv.cmd.Process.Pid)
	fmt.Printf("import: %d connections in %v = %.0f connections/s (tokenbroker import --batch %d --parallel %d); tokenbroker CPU %.1f µs per connection (load %s)\n",
		o.n, elapsed.Round(time.Millisecond), float64(o.n)/elapsed.Seconds(), o.batch, o.parallel,
		float64((cpu1-cpu0).Microseconds())/float64(o.n), loadavg())
	_, peak := rss(srv.cmd.Process.Pid)
	time.Sleep(o.idle)
	full, _ := rss(srv.cmd.Process.Pid)
	fmt.Printf("resident memory, idle after the import (%v): %.1f MB (peak %.1f MB): %.0f bytes per connection over the empty server\n",
		o.idle, full/1e6, peak/1e6, (full-empty)/float64(o.n))

	if err := measureReads(o, srv); err != nil {
		return err
	}
	if err := measureLists(o, srv); err != nil {
		return err
	}
	after, _ := rss(srv.cmd.Process.Pid)
	fmt.Printf("resident memory after reads and lists: %.1f MB (%.0f bytes per connection over the empty server)\n",
		after/1e6, (after-empty)/float64(o.n))
	srv.stop()
	stopped = true
	if o.skipPhase2 {
		return nil
	}

	// Phase 2: scheduler on, over the same database.
	srv, startup, err = startMillionServer(o.bin, cfg2, addr, log2)
	if err != nil {
		return err
	}
	stopped = false
	srv.key = ""
	fmt.Printf("start-up with %d connections: %v (to /healthz answering)\n", o.n, startup.Round(time.Millisecond))
	// A key for /metrics: the bootstrap key was printed only once.
	srv.key, err = createKey(o.bin, cfg2)
	if err != nil {
		return err
	}
	firstDue := t0.Add(o.offset - 5*time.Minute)
	if w := time.Until(firstDue.Add(30 * time.Second)); w > 0 {
		fmt.Printf("waiting %v for the first expiries' refresh windows\n", w.Round(time.Second))
		time.Sleep(w)
	}
	steadyLag, err := measureSteady(o, srv, up.addr)
	if err != nil {
		return err
	}
	if backend == "postgres" && o.outage > 0 && o.pgStop != "" && o.pgStart != "" {
		if err := measureOutage(o, srv, up.addr, dsn, steadyLag); err != nil {
			return err
		}
	}
	st, err := getStats(&http.Client{Timeout: 5 * time.Second}, up.addr)
	if err == nil {
		fmt.Printf("provider: %d refreshes, %d replays of a spent refresh token\n", st.Refreshes, st.Reuse)
	}
	return nil
}

// summarizeLog prints how often each warning or error message appears in
// a server's log (its stderr), rather than the lines themselves.
func summarizeLog(path string) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return
	}
	counts := map[string]int{}
	var order []string
	msgRe := regexp.MustCompile(`level=(\w+) msg="([^"]*)"`)
	for _, line := range strings.Split(string(b), "\n") {
		if m := msgRe.FindStringSubmatch(line); m != nil {
			k := m[1] + " " + m[2]
			if counts[k] == 0 {
				order = append(order, k)
			}
			counts[k]++
		}
	}
	if len(order) > 0 {
		fmt.Printf("server log %s:\n", filepath.Base(path))
	}
	for _, k := range order {
		fmt.Printf("  %6d × %s\n", counts[k], k)
	}
}

func bootstrapKey(lines <-chan string) (string, error) {
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line := <-lines:
			if k := keyRe.FindString(line); k != "" {
				return k, nil
			}
		case <-timeout:
			return "", errors.New("tokenbroker printed no bootstrap API key")
		}
	}
}

func createKey(bin, cfg string) (string, error) {
	out, err := exec.Command(bin, "apikey", "create", "--config", cfg, "--name", "million", "--scope", "admin").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apikey create: %v: %s", err, out)
	}
	k := keyRe.FindString(string(out))
	if k == "" {
		return "", fmt.Errorf("apikey create printed no key")
	}
	return k, nil
}

func millionID(i int) string { return fmt.Sprintf("conn-%07d", i) }

// runImport pipes n JSON lines into `tokenbroker import`. Expiries are
// spread evenly over the lifetime starting at t0+offset, in an order
// unrelated to the ids; each token is issued one lifetime before it
// expires (or now, if that is later), so every token lives one lifetime.
func runImport(o millionOpts, srv *millionServer, t0 time.Time) error {
	cmd := exec.Command(o.bin, "import", "--batch", strconv.Itoa(o.batch), "--parallel", strconv.Itoa(o.parallel))
	cmd.Env = append(os.Environ(), "TOKENBROKER_URL=http://"+srv.addr, "TOKENBROKER_API_KEY="+srv.key)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	// stride is coprime to n for the n used here (a prime not dividing it).
	const stride = 7_919
	for i := range o.n {
		slot := (i * stride) % o.n
		exp := t0.Add(o.offset + time.Duration(float64(o.lifetime)*float64(slot)/float64(o.n)))
		issued := exp.Add(-o.lifetime)
		if now := time.Now(); issued.After(now) {
			issued = now
		}
		provider := "bench"
		if i%10 == 0 {
			provider = "bench2"
		}
		id := millionID(i)
		fmt.Fprintf(w, `{"id":%q,"provider":%q,"access_token":"bench-access-%s-%s","refresh_token":"bench-refresh-%s-%s","token_type":"Bearer","expires_at":%q,"issued_at":%q}`+"\n",
			id, provider, id, strings.Repeat("a", 32), id, strings.Repeat("r", 32),
			exp.UTC().Format(time.RFC3339), issued.UTC().Format(time.RFC3339))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	stdin.Close()
	return cmd.Wait()
}

func authGet(c *http.Client, url, key string) (int, time.Duration, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	t := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(t), nil
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func measureReads(o millionOpts, srv *millionServer) error {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.conc}, Timeout: 30 * time.Second}
	var (
		mu   sync.Mutex
		lats []time.Duration
		bad  atomic.Int64
		next atomic.Int64
		wg   sync.WaitGroup
	)
	t0 := time.Now()
	cpu0, _ := cpuTicks(srv.cmd.Process.Pid)
	for range o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for next.Add(1) <= int64(o.reads) {
				id := millionID(rand.IntN(o.n))
				code, d, err := authGet(c, "http://"+srv.addr+"/v1/connections/"+id+"/token", srv.key)
				if err != nil || code != http.StatusOK {
					bad.Add(1)
					continue
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	cpu1, _ := cpuTicks(srv.cmd.Process.Pid)
	fmt.Printf("token reads, random connections (cache misses included), %d readers: %d reads in %v (%.0f/s), p50 %.2fms p99 %.2fms, failed %d; tokenbroker CPU %.0f µs per read (load %s)\n",
		o.conc, len(lats), el.Round(time.Millisecond), float64(len(lats))/el.Seconds(), ms(pct(lats, 0.5)), ms(pct(lats, 0.99)), bad.Load(),
		float64((cpu1-cpu0).Microseconds())/float64(max(len(lats), 1)), loadavg())
	return nil
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// dashboardClient signs in to the dashboard with key.
func dashboardClient(addr, key string) (*http.Client, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + addr + "/ui/signin")
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfRe.FindSubmatch(b)
	if m == nil {
		return nil, errors.New("dashboard sign-in page has no form token")
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/ui/signin",
		strings.NewReader(url.Values{"csrf": {string(m[1])}, "api_key": {key}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://"+addr) // as a browser sends it
	resp, err = c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return nil, fmt.Errorf("dashboard sign-in: %s", resp.Status)
	}
	return c, nil
}

func measureLists(o millionOpts, srv *millionServer) error {
	deep := millionID(o.n * 9 / 10)
	api := &http.Client{Timeout: time.Minute}
	ui, err := dashboardClient(srv.addr, srv.key)
	if err != nil {
		return err
	}
	queries := []struct {
		name string
		c    *http.Client
		path string
		key  string
	}{
		{"API first page", api, "/v1/connections?limit=100", srv.key},
		{"API provider=bench2", api, "/v1/connections?provider=bench2&limit=100", srv.key},
		{"API status=active", api, "/v1/connections?status=active&limit=100", srv.key},
		{"API provider=bench2&status=active", api, "/v1/connections?provider=bench2&status=active&limit=100", srv.key},
		{"API provider=bench3&status=active (none)", api, "/v1/connections?provider=bench3&status=active&limit=100", srv.key},
		{"API status=needs_reauth (none)", api, "/v1/connections?status=needs_reauth&limit=100", srv.key},
		{"API provider=bench2&status=needs_reauth (none)", api, "/v1/connections?provider=bench2&status=needs_reauth&limit=100", srv.key},
		{"API after=" + deep, api, "/v1/connections?after=" + deep + "&limit=100", srv.key},
		{"API provider=bench2&after=" + deep, api, "/v1/connections?provider=bench2&after=" + deep + "&limit=100", srv.key},
		{"dashboard /ui/", ui, "/ui/", ""},
		{"dashboard provider=bench2&status=active", ui, "/ui/?provider=bench2&status=active", ""},
		{"dashboard provider=bench3&status=active (none)", ui, "/ui/?provider=bench3&status=active", ""},
		{"dashboard status=needs_reauth (none)", ui, "/ui/?status=needs_reauth", ""},
		{"dashboard status=failing (none)", ui, "/ui/?status=failing", ""},
		{"dashboard after=" + deep, ui, "/ui/?after=" + deep, ""},
	}
	fmt.Printf("list and dashboard pages (%d requests each, one at a time):\n", o.listRounds)
	for _, q := range queries {
		var lats []time.Duration
		for range o.listRounds {
			code, d, err := authGet(q.c, "http://"+srv.addr+q.path, q.key)
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			if code != http.StatusOK {
				return fmt.Errorf("%s: status %d", q.name, code)
			}
			lats = append(lats, d)
		}
		fmt.Printf("  %-52s p50 %8.2fms p99 %8.2fms\n", q.name, ms(pct(lats, 0.5)), ms(pct(lats, 0.99)))
	}
	fmt.Printf("  (load %s)\n", loadavg())
	return nil
}

// cpuTicks is a process's user+system CPU time from /proc.
func cpuTicks(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is f[0]; utime and stime are the
	// 14th and 15th fields of the line, f[11] and f[12] here.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

var lagRe = regexp.MustCompile(`(?m)^tokenbroker_scheduler_lag_seconds ([0-9.eE+-]+)$`)

func schedulerLag(addr, key string) (float64, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := lagRe.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("/metrics (%s) has no scheduler lag", resp.Status)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// measureSteady measures the tokenbroker process's CPU while it refreshes
// what falls due, and returns the largest scheduler lag seen.
func measureSteady(o millionOpts, srv *millionServer, upstream string) (float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	pid := srv.cmd.Process.Pid
	// A backlog left by phase 1 (connections that fell due while the
	// scheduler was off) is drained first; the steady state starts after.
	tb := time.Now()
	for time.Since(tb) < o.recoverLimit {
		if l, err := schedulerLag(srv.addr, srv.key); err == nil && l <= 5 && time.Since(tb) > 5*time.Second {
			break
		}
		time.Sleep(2 * time.Second)
	}
	fmt.Printf("backlog of phase 1 drained (lag ≤ 5s) after %v\n", time.Since(tb).Round(time.Second))
	st0, err := getStats(c, upstream)
	if err != nil {
		return 0, err
	}
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	var maxLag float64
	var lags []float64
	for time.Since(t0) < o.steady {
		time.Sleep(5 * time.Second)
		if l, err := schedulerLag(srv.addr, srv.key); err == nil {
			maxLag = max(maxLag, l)
			lags = append(lags, l)
		}
	}
	el := time.Since(t0)
	cpu1, _ := cpuTicks(pid)
	st1, err := getStats(c, upstream)
	if err != nil {
		return 0, err
	}
	refreshes := st1.Refreshes - st0.Refreshes
	cpu := cpu1 - cpu0
	mem, _ := rss(pid)
	slices.Sort(lags)
	var medianLag float64
	if len(lags) > 0 {
		medianLag = lags[len(lags)/2]
	}
	fmt.Printf("steady state over %v: %d refreshes (%.0f/s), tokenbroker CPU %.1f%% of one core (%.0f µs per refresh), scheduler lag median %.1fs max %.1fs, RSS %.1f MB (load %s)\n",
		el.Round(time.Second), refreshes, float64(refreshes)/el.Seconds(), 100*cpu.Seconds()/el.Seconds(),
		float64(cpu.Microseconds())/float64(max(refreshes, 1)), medianLag, maxLag, mem/1e6, loadavg())
	return maxLag, nil
}

func shell(cmdline string) error {
	out, err := exec.Command("sh", "-c", cmdline).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", cmdline, err, out)
	}
	return nil
}

// expiredCount counts active connections whose access token has expired.
func expiredCount(dsn string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int64
	err = c.QueryRow(ctx, `SELECT count(*) FROM connections WHERE status = 'active' AND expires_at < now()`).Scan(&n)
	return n, err
}

// measureOutage stops the database for o.outage, starts it again, and
// measures until the scheduler's lag is normal again.
func measureOutage(o millionOpts, srv *millionServer, upstream, dsn string, steadyLag float64) error {
	normal := o.lagNormal.Seconds()
	if normal == 0 {
		normal = max(steadyLag, 5)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	before, _ := expiredCount(dsn)
	st0, _ := getStats(c, upstream)
	fmt.Printf("outage: stopping PostgreSQL for %v (expired active tokens before: %d)\n", o.outage, before)
	if err := shell(o.pgStop); err != nil {
		return err
	}
	down := time.Now()
	alive := 0
	for time.Since(down) < o.outage {
		time.Sleep(10 * time.Second)
		if code, _, err := authGet(c, "http://"+srv.addr+"/healthz", ""); err == nil && code == http.StatusOK {
			alive++
		}
		select {
		case <-srv.waited:
			return errors.New("tokenbroker exited during the outage")
		default:
		}
	}
	select {
	case <-srv.waited:
		return errors.New("tokenbroker exited during the outage")
	default:
	}
	if err := shell(o.pgStart); err != nil {
		return err
	}
	up := time.Now()
	fmt.Printf("outage: PostgreSQL down %v; tokenbroker answered /healthz %d times during it; started again\n", up.Sub(down).Round(time.Second), alive)
	var (
		peakExpired int64
		recovered   time.Duration
		lastLag     float64
	)
	for i := 0; time.Since(up) < o.recoverLimit; i++ {
		// A count reads the table (no index serves expiry): every 10 s.
		if i%5 == 0 {
			if n, err := expiredCount(dsn); err == nil {
				peakExpired = max(peakExpired, n)
			}
		}
		l, err := schedulerLag(srv.addr, srv.key)
		if err == nil {
			lastLag = l
			if l <= normal && time.Since(up) > 5*time.Second {
				recovered = time.Since(up)
				break
			}
		}
		time.Sleep(2 * time.Second)
	}
	st1, _ := getStats(c, upstream)
	after, _ := expiredCount(dsn)
	if recovered == 0 {
		fmt.Printf("outage: NOT recovered within %v (lag %.0fs)\n", o.recoverLimit, lastLag)
	} else {
		fmt.Printf("outage: lag back to ≤ %.1fs %v after the database came back; %d refreshes meanwhile; expired active tokens: at most %d while recovering, %d after (load %s)\n",
			normal, recovered.Round(time.Second), st1.Refreshes-st0.Refreshes, peakExpired, after, loadavg())
	}
	if code, _, err := authGet(c, "http://"+srv.addr+"/readyz", ""); err != nil || code != http.StatusOK {
		fmt.Printf("outage: /readyz after recovery: %d %v\n", code, err)
	}
	return nil
}

// serveMillionProvider is the bench provider of the million run: a token
// endpoint that rotates refresh tokens on every use and counts a replay of
// a spent one. Unlike the storm's provider it accepts refresh tokens it did
// not issue (the imported ones) once each; it remembers only spent tokens.
func serveMillionProvider(args []string) error {
	fs := flag.NewFlagSet("serve-provider", flag.ContinueOnError)
	latency := fs.Duration("latency", 0, "token endpoint latency")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := listen()
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		spent   = map[string]bool{}
		n       int64
		refresh int
		reuse   int
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		if *latency > 0 {
			time.Sleep(*latency)
		}
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		rt := r.Form.Get("refresh_token")
		mu.Lock()
		refresh++
		if spent[rt] || !strings.HasPrefix(rt, "bench-refresh-") {
			if spent[rt] {
				reuse++
			}
			mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		spent[rt] = true
		n++
		k := n
		mu.Unlock()
		fmt.Fprintf(w, `{"access_token":"bench-access-r%d-%s","refresh_token":"bench-refresh-r%d-%s","token_type":"Bearer","expires_in":3600}`,
			k, strings.Repeat("a", 32), k, strings.Repeat("r", 32))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]int{"refreshes": refresh, "reuse": reuse})
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	return http.Serve(ln, mux)
}
