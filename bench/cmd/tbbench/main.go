// Command tbbench measures the tokenbroker server side by side with its
// baselines, each in its own process on loopback, in one run:
//
//	tbbench token -bin ./tokenbroker   GET …/token vs a bare net/http JSON handler
//	tbbench proxy -bin ./tokenbroker   /v1/proxy vs direct vs httputil.ReverseProxy
//	tbbench rss   -bin ./tokenbroker   resident memory with N imported connections
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
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
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

// broker starts tokenbroker with a provider whose token endpoint and API
// live on upstream, and returns it with its bootstrap admin key.
func startBroker(bin, upstream string) (*proc, string, func(), error) {
	dir, err := os.MkdirTemp("", "tbbench-")
	if err != nil {
		return nil, "", nil, err
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
database: sqlite:%[1]s/tokenbroker.db
encryption_keys_file: %[1]s/keys
log_level: warn
providers:
  - name: bench
    token_url: http://%[2]s/token
    client_id: bench
    client_secret_env: TBBENCH_CLIENT_SECRET
    api_base_url: http://%[2]s/api
`, dir, upstream, addr)
	path := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", nil, err
	}
	p, err := startWithHealth([]string{"TBBENCH_CLIENT_SECRET=bench-secret"}, addr, bin, "serve", "--config", path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	// The bootstrap key is printed before the server listens.
	var key string
	timeout := time.After(10 * time.Second)
	for key == "" {
		select {
		case line := <-p.lines:
			key = keyRe.FindString(line)
		case <-timeout:
			p.stop()
			os.RemoveAll(dir)
			return nil, "", nil, errors.New("tokenbroker printed no bootstrap API key")
		}
	}
	return p, key, func() { p.stop(); os.RemoveAll(dir) }, nil
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
	o, err := parse("token", args, nil)
	if err != nil {
		return err
	}
	up, err := start(nil, self(), "serve-upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	tb, key, cleanup, err := startBroker(o.bin, up.addr)
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
	results := runRounds(c, o, targets)
	ratio := results[1].RPS() / results[0].RPS()
	fmt.Printf("tokenbroker/bare throughput: %.0f%%\n", ratio*100)
	return nil
}

type target struct{ name, url, key string }

// runRounds alternates targets within each round, so that a noisy moment
// on the machine hits all of them, and pools each target's rounds.
func runRounds(c *http.Client, o opts, targets []target) []load.Result {
	pooled := make([]load.Result, len(targets))
	for round := range o.rounds {
		for i, t := range targets {
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

func benchProxy(args []string) error {
	o, err := parse("proxy", args, nil)
	if err != nil {
		return err
	}
	up, err := start(nil, self(), "serve-upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	rp, err := start(nil, self(), "serve-revproxy", "-target", "http://"+up.addr)
	if err != nil {
		return err
	}
	defer rp.stop()
	tb, key, cleanup, err := startBroker(o.bin, up.addr)
	if err != nil {
		return err
	}
	defer cleanup()
	c := load.Client(o.concurrency)
	if err := importConn(c, tb.addr, key, "c1"); err != nil {
		return err
	}
	fmt.Printf("Proxy: %d clients, %v x %d rounds\n", o.concurrency, o.duration, o.rounds)
	res := runRounds(c, o, []target{
		{"direct to upstream", "http://" + up.addr + "/api/v1/items?page=1", "upstream-token"},
		{"httputil.ReverseProxy", "http://" + rp.addr + "/api/v1/items?page=1", "upstream-token"},
		{"tokenbroker /v1/proxy", "http://" + tb.addr + "/v1/proxy/c1/v1/items?page=1", key},
	})
	fmt.Printf("added median latency vs direct: %.1fµs; vs ReverseProxy: %.1fµs\n",
		float64(res[2].Quantile(0.5)-res[0].Quantile(0.5))/1e3, float64(res[2].Quantile(0.5)-res[1].Quantile(0.5))/1e3)
	fmt.Printf("tokenbroker/ReverseProxy throughput: %.0f%%\n", res[2].RPS()/res[1].RPS()*100)
	return nil
}

func benchRSS(args []string) error {
	var n int
	o, err := parse("rss", args, func(fs *flag.FlagSet) { fs.IntVar(&n, "n", 100000, "connections to import") })
	if err != nil {
		return err
	}
	up, err := start(nil, self(), "serve-upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	tb, key, cleanup, err := startBroker(o.bin, up.addr)
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
	item := []byte(`{"items":[{"id":1,"name":"first"},{"id":2,"name":"second"}],"next":null}`)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"bench-access-%d","token_type":"Bearer","expires_in":3600}`, time.Now().UnixNano())
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(item)
	})
	return http.Serve(ln, mux)
}

func serveRevProxy(args []string) error {
	fs := flag.NewFlagSet("serve-revproxy", flag.ContinueOnError)
	target := fs.String("target", "", "upstream base URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: tr}
	ln, err := listen()
	if err != nil {
		return err
	}
	return http.Serve(ln, rp)
}
