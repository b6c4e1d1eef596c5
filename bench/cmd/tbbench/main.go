// Command tbbench measures the tokenbroker server side by side with its
// baselines, each in its own process on loopback, in one run:
//
//	tbbench token -bin ./tokenbroker   GET …/token vs a bare net/http JSON handler
//	tbbench proxy -bin ./tokenbroker   /v1/proxy vs httputil.ReverseProxy (plain and with a buffer pool);
//	                                   -clients 32,256 -size small,64k -sse (proxy.go)
//	tbbench rss   -bin ./tokenbroker   resident memory with N imported connections
//	tbbench storm -bin ./tokenbroker -pg postgres://…   300 callers on an expired token,
//	                                   one SQLite process vs three PostgreSQL replicas
//	tbbench audit -bin ./tokenbroker   token read and proxy with the audit trail on vs off
//
// The commands in BENCHMARKS.md build the binary and run these. Every
// request goes to 127.0.0.1 and every run is bounded in time.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/bench/load"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tbbench token|proxy|rss [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "token":
		err = benchToken(os.Args[2:])
	case "proxy":
		err = benchProxy(os.Args[2:])
	case "rss":
		err = benchRSS(os.Args[2:])
	case "storm":
		err = benchStorm(os.Args[2:])
	case "audit":
		err = benchAudit(os.Args[2:])
	case "million":
		err = benchMillion(os.Args[2:]) // million.go
	// Helper processes, started by the benchmarks themselves.
	case "serve-static":
		err = serveStatic(os.Args[2:])
	case "serve-upstream":
		err = serveUpstream(os.Args[2:])
	case "serve-revproxy":
		err = serveRevProxy(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbbench:", err)
		os.Exit(1)
	}
}

// common flags of the measuring commands.
type opts struct {
	bin         string
	concurrency int
	duration    time.Duration
	warm        time.Duration
	rounds      int
	// reverseEven runs the targets in reverse order in every second
	// round, so that what one target leaves behind (a backlog to write,
	// a GC cycle) does not always land on the same next target.
	reverseEven bool
}

func parse(name string, args []string, extra func(*flag.FlagSet)) (opts, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var o opts
	fs.StringVar(&o.bin, "bin", "./tokenbroker", "tokenbroker binary")
	fs.IntVar(&o.concurrency, "c", 32, "concurrent clients")
	fs.DurationVar(&o.duration, "d", 5*time.Second, "measured time per round and target")
	fs.DurationVar(&o.warm, "warm", time.Second, "warm-up per round and target")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; targets alternate within each round")
	if extra != nil {
		extra(fs)
	}
	return o, fs.Parse(args)
}

// proc is a child process that printed the address it listens on.
type proc struct {
	cmd   *exec.Cmd
	addr  string
	lines chan string // stdout, for the bootstrap API key
}

var addrRe = regexp.MustCompile(`(?:addr=|listening on )"?(127\.0\.0\.1:\d+)`)

// start runs a child and waits until it reports its address on stdout or
// stderr.
func start(env []string, name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd}
	found := make(chan string, 2)
	scan := func(r io.Reader) {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			if m := addrRe.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}
	go scan(stdout)
	go scan(stderr)
	select {
	case p.addr = <-found:
		return p, nil
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not report its address", name)
	}
}

// startWithHealth runs a server child that listens on addr and waits for
// its /healthz to answer. Its stdout lines arrive on p.lines.
func startWithHealth(env []string, addr, name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, addr: addr, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads past the first lines
			}
		}
	}()
	for range 300 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("%s did not become healthy on %s", name, addr)
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

var keyRe = regexp.MustCompile(`tbk_[A-Za-z0-9_-]+`)

// brokerOpts says how to run one tokenbroker process.
type brokerOpts struct {
	database string // "" for SQLite in the process's own directory
	keysFile string // "" for a new key file; replicas must share one
	wantKey  bool   // expect a bootstrap admin key on stdout (empty store)
	extra    string // more top-level configuration, such as an audit: section
}

// startBroker starts tokenbroker with a provider whose token endpoint and
// API live on upstream, and returns it with its bootstrap admin key when
// o.wantKey is set.
func startBroker(bin, upstream string, o brokerOpts) (*proc, string, func(), error) {
	dir, err := os.MkdirTemp("", "tbbench-")
	if err != nil {
		return nil, "", nil, err
	}
	if o.database == "" {
		o.database = "sqlite:" + dir + "/tokenbroker.db"
	}
	if o.keysFile == "" {
		o.keysFile = dir + "/keys"
	}
	// Logging stays at warn so the run measures serving, not logging; the
	// address is chosen here because no info line will announce it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf(`listen: %[3]s
data_dir: %[1]s
database: %[4]s
encryption_keys_file: %[5]s
log_level: warn
providers:
  - name: bench
    token_url: http://%[2]s/token
    client_id: bench
    client_secret_env: TBBENCH_CLIENT_SECRET
    api_base_url: http://%[2]s/api
`, dir, upstream, addr, o.database, o.keysFile) + o.extra
	path := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", nil, err
	}
	p, err := startWithHealth([]string{"TBBENCH_CLIENT_SECRET=bench-secret"}, addr, bin, "serve", "--config", path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	cleanup := func() { p.stop(); os.RemoveAll(dir) }
	if !o.wantKey {
		return p, "", cleanup, nil
	}
	// The bootstrap key is printed before the server listens.
	var key string
	timeout := time.After(10 * time.Second)
	for key == "" {
		select {
		case line := <-p.lines:
			key = keyRe.FindString(line)
		case <-timeout:
			cleanup()
			return nil, "", nil, errors.New("tokenbroker printed no bootstrap API key")
		}
	}
	return p, key, cleanup, nil
}

// startPair starts the bench provider and one SQLite tokenbroker in front
// of it; cleanup stops both.
func startPair(bin string) (up, tb *proc, key string, cleanup func(), err error) {
	up, err = start(nil, self(), "serve-upstream")
	if err != nil {
		return nil, nil, "", nil, err
	}
	tb, key, stopBroker, err := startBroker(bin, up.addr, brokerOpts{wantKey: true})
	if err != nil {
		up.stop()
		return nil, nil, "", nil, err
	}
	return up, tb, key, func() { stopBroker(); up.stop() }, nil
}

func importConn(c *http.Client, addr, key, id string) error {
	body, _ := json.Marshal(map[string]any{
		"id": id, "provider": "bench",
		"access_token":  "bench-access-" + strings.Repeat("a", 40) + id,
		"refresh_token": "bench-refresh-" + strings.Repeat("r", 40) + id,
		"expires_in":    86400,
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/connections", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("import %s: %s: %s", id, resp.Status, b)
	}
	return nil
}

func self() string {
	exe, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return exe
}

func benchToken(args []string) error {
	var pgDSN string
	o, err := parse("token", args, func(fs *flag.FlagSet) {
		fs.StringVar(&pgDSN, "pg", "", "also measure a broker on this PostgreSQL database (postgres://…)")
	})
	if err != nil {
		return err
	}
	up, tb, key, cleanup, err := startPair(o.bin)
	if err != nil {
		return err
	}
	defer cleanup()
	c := load.Client(o.concurrency)
	if err := importConn(c, tb.addr, key, "c1"); err != nil {
		return err
	}
	tokenURL := "http://" + tb.addr + "/v1/connections/c1/token"
	// The baseline serves the very bytes tokenbroker answers with.
	req, _ := http.NewRequest(http.MethodGet, tokenURL, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("token: %s", resp.Status)
	}
	bodyFile := filepath.Join(os.TempDir(), fmt.Sprintf("tbbench-body-%d.json", os.Getpid()))
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		return err
	}
	defer os.Remove(bodyFile)
	base, err := start(nil, self(), "serve-static", "-body", bodyFile)
	if err != nil {
		return err
	}
	defer base.stop()

	fmt.Printf("GET token with a valid token: %d clients, %v x %d rounds, response %d bytes\n", o.concurrency, o.duration, o.rounds, len(body))
	targets := []target{
		{"bare net/http JSON handler", "http://" + base.addr + "/", ""},
		{"tokenbroker GET …/token", tokenURL, key},
	}
	if pgDSN != "" {
		pg, pgKey, pgCleanup, err := startBroker(o.bin, up.addr, brokerOpts{database: pgDSN, wantKey: true})
		if err != nil {
			return err
		}
		defer pgCleanup()
		if err := importConn(c, pg.addr, pgKey, "c1"); err != nil {
			return err
		}
		targets[1].name = "tokenbroker on SQLite"
		targets = append(targets, target{"tokenbroker on PostgreSQL", "http://" + pg.addr + "/v1/connections/c1/token", pgKey})
	}
	results := runRounds(c, o, targets)
	for _, r := range results[1:] {
		fmt.Printf("%s / bare throughput: %.0f%%, p99 %.2fx the bare p99 (load %s)\n", r.Name, r.RPS()/results[0].RPS()*100,
			float64(r.Quantile(0.99))/float64(results[0].Quantile(0.99)), loadAvg())
	}
	return nil
}

type target struct{ name, url, key string }

// runRounds alternates targets within each round, so that a noisy moment
// on the machine hits all of them, and pools each target's rounds.
func runRounds(c *http.Client, o opts, targets []target) []load.Result {
	pooled := make([]load.Result, len(targets))
	for round := range o.rounds {
		order := make([]int, len(targets))
		for i := range order {
			order[i] = i
		}
		if o.reverseEven && round%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			t := targets[i]
			r := load.Run(context.Background(), t.name, c, o.concurrency, o.warm, o.duration, http.StatusOK, func() *http.Request {
				req, _ := http.NewRequest(http.MethodGet, t.url, nil)
				if t.key != "" {
					req.Header.Set("Authorization", "Bearer "+t.key)
				}
				return req
			})
			fmt.Printf("  round %d  %s\n", round+1, r)
			p := &pooled[i]
			p.Name = t.name
			p.Requests += r.Requests
			p.Errors += r.Errors
			p.Elapsed += r.Elapsed
			p.Latencies = append(p.Latencies, r.Latencies...)
		}
	}
	fmt.Println("pooled:")
	for i := range pooled {
		slices.Sort(pooled[i].Latencies)
		fmt.Printf("  %s\n", pooled[i])
	}
	return pooled
}

func benchRSS(args []string) error {
	var n int
	o, err := parse("rss", args, func(fs *flag.FlagSet) { fs.IntVar(&n, "n", 100000, "connections to import") })
	if err != nil {
		return err
	}
	_, tb, key, cleanup, err := startPair(o.bin)
	if err != nil {
		return err
	}
	defer cleanup()
	c := load.Client(o.concurrency)
	before, _ := rss(tb.cmd.Process.Pid)
	t0 := time.Now()
	ids := make(chan int)
	errc := make(chan error, o.concurrency)
	for range o.concurrency {
		go func() {
			for i := range ids {
				if err := importConn(c, tb.addr, key, fmt.Sprintf("conn-%07d", i)); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	for range o.concurrency {
		if err := <-errc; err != nil {
			return err
		}
	}
	elapsed := time.Since(t0)
	// Touch a sample of them through the token path too.
	for i := 0; i < n; i += max(1, n/1000) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v1/connections/conn-%07d/token", tb.addr, i), nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	after, peak := rss(tb.cmd.Process.Pid)
	fmt.Printf("imported %d connections in %v (%.0f/s)\n", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	fmt.Printf("resident memory: %.1f MB at start, %.1f MB after import, peak %.1f MB\n", before/1e6, after/1e6, peak/1e6)
	return nil
}

// rss reads a process's resident and peak resident set size in bytes.
func rss(pid int) (cur, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb float64
		if _, err := fmt.Sscanf(line, "VmRSS: %f kB", &kb); err == nil {
			cur = kb * 1024
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %f kB", &kb); err == nil {
			peak = kb * 1024
		}
	}
	return cur, peak
}

func listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	return ln, nil
}

func serveStatic(args []string) error {
	fs := flag.NewFlagSet("serve-static", flag.ContinueOnError)
	bodyFile := fs.String("body", "", "file with the JSON body to serve")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	ln, err := listen()
	if err != nil {
		return err
	}
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(body)
	}))
}

// serveUpstream is the provider: a token endpoint and a small JSON API.
func serveUpstream(args []string) error {
	ln, err := listen()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("serve-upstream", flag.ContinueOnError)
	latency := fs.Duration("latency", 0, "token endpoint latency")
	if err := fs.Parse(args); err != nil {
		return err
	}
	item := []byte(`{"items":[{"id":1,"name":"first"},{"id":2,"name":"second"}],"next":null}`)
	prov := newRotatingProvider(*latency)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", prov.token)
	mux.HandleFunc("POST /issue", prov.issue)
	mux.HandleFunc("GET /stats", prov.stats)
	mux.HandleFunc("/api/", benchAPI(item)) // proxy.go
	return http.Serve(ln, mux)
}

// rotatingProvider is a token endpoint that rotates refresh tokens on
// every use and, like ORY Hydra or Auth0, revokes the whole chain when a
// spent one is replayed: a double spend shows up in its stats.
type rotatingProvider struct {
	latency time.Duration
	mu      sync.Mutex
	live    map[string]bool // refresh tokens that may be used
	spent   map[string]bool
	n       int
	refresh int
	reuse   int
	// When the last refresh-token grant arrived and was answered (Unix
	// nanoseconds): the storm benchmark splits a storm's time around them.
	lastRecv, lastSent int64
}

func newRotatingProvider(latency time.Duration) *rotatingProvider {
	return &rotatingProvider{latency: latency, live: map[string]bool{}, spent: map[string]bool{}}
}

func (p *rotatingProvider) pair() (string, string) {
	p.n++
	rt := fmt.Sprintf("bench-refresh-%d-%d", time.Now().UnixNano(), p.n)
	p.live[rt] = true
	return fmt.Sprintf("bench-access-%d-%d", time.Now().UnixNano(), p.n), rt
}

// issue hands out a fresh grant, as an authorization code exchange would.
func (p *rotatingProvider) issue(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	at, rt := p.pair()
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"access_token": at, "refresh_token": rt})
}

func (p *rotatingProvider) token(w http.ResponseWriter, r *http.Request) {
	recv := time.Now().UnixNano()
	if p.latency > 0 {
		time.Sleep(p.latency)
	}
	_ = r.ParseForm()
	w.Header().Set("Content-Type", "application/json")
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Form.Get("grant_type") != "refresh_token" {
		at, _ := p.pair()
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, at)
		return
	}
	p.refresh++
	rt := r.Form.Get("refresh_token")
	if !p.live[rt] {
		if p.spent[rt] {
			p.reuse++
		}
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_grant"}`)
		return
	}
	delete(p.live, rt)
	p.spent[rt] = true
	at, next := p.pair()
	p.lastRecv, p.lastSent = recv, time.Now().UnixNano()
	fmt.Fprintf(w, `{"access_token":%q,"refresh_token":%q,"token_type":"Bearer","expires_in":3600}`, at, next)
}

func (p *rotatingProvider) stats(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]int64{"refreshes": int64(p.refresh), "reuse": int64(p.reuse),
		"last_recv": p.lastRecv, "last_sent": p.lastSent})
}

type providerStats struct {
	Refreshes, Reuse int
	LastRecv         int64 `json:"last_recv"`
	LastSent         int64 `json:"last_sent"`
}

func getStats(c *http.Client, upstream string) (providerStats, error) {
	var st providerStats
	resp, err := c.Get("http://" + upstream + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchAudit measures what the audit trail costs: two brokers on one
// upstream, identical but for audit.disabled, alternating within each round
// on a token read and on a proxied call.
func benchAudit(args []string) error {
	o, err := parse("audit", args, nil)
	if err != nil {
		return err
	}
	o.reverseEven = true
	up, on, onKey, cleanup, err := startPair(o.bin)
	if err != nil {
		return err
	}
	defer cleanup()
	off, offKey, offCleanup, err := startBroker(o.bin, up.addr, brokerOpts{wantKey: true, extra: "audit:\n  disabled: true\n"})
	if err != nil {
		return err
	}
	defer offCleanup()
	c := load.Client(o.concurrency)
	for _, b := range []struct{ addr, key string }{{on.addr, onKey}, {off.addr, offKey}} {
		if err := importConn(c, b.addr, b.key, "c1"); err != nil {
			return err
		}
	}
	fmt.Printf("Audit on vs off: %d clients, %v x %d rounds\n", o.concurrency, o.duration, o.rounds)
	res := runRounds(c, o, []target{
		{"token read, audit off", "http://" + off.addr + "/v1/connections/c1/token", offKey},
		{"token read, audit on", "http://" + on.addr + "/v1/connections/c1/token", onKey},
		{"proxy, audit off", "http://" + off.addr + "/v1/proxy/c1/v1/items?page=1", offKey},
		{"proxy, audit on", "http://" + on.addr + "/v1/proxy/c1/v1/items?page=1", onKey},
	})
	fmt.Printf("token read: audit on / off throughput %.0f%%, p50 %+.1fµs\n", res[1].RPS()/res[0].RPS()*100,
		float64(res[1].Quantile(0.5)-res[0].Quantile(0.5))/1e3)
	fmt.Printf("proxy: audit on / off throughput %.0f%%, p50 %+.1fµs\n", res[3].RPS()/res[2].RPS()*100,
		float64(res[3].Quantile(0.5)-res[2].Quantile(0.5))/1e3)
	// Every request was recorded, or the trail says how many were not.
	time.Sleep(2 * time.Second) // a few batch intervals, for the last entries
	req, _ := http.NewRequest(http.MethodGet, "http://"+on.addr+"/v1/audit?action=audit.dropped&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+onKey)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var page struct {
		Entries []struct {
			Detail string `json:"detail"`
		} `json:"entries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return err
	}
	if len(page.Entries) == 0 {
		fmt.Println("audit entries dropped: none")
	}
	for _, e := range page.Entries {
		fmt.Println("audit entries dropped:", e.Detail)
	}
	return nil
}
