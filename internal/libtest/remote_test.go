package libtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/client/remote"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// Worker processes are this test binary run again with workerEnv set:
// TestMain sends them to runWorker instead of the tests.
const (
	workerEnv      = "LIBTEST_WORKER"
	workerBase     = "LIBTEST_WORKER_BASE"
	workerKey      = "LIBTEST_WORKER_KEY"
	workerConn     = "LIBTEST_WORKER_CONN"
	workerAPI      = "LIBTEST_WORKER_API"
	workerRoutines = 100
)

func TestMain(m *testing.M) {
	if name := os.Getenv(workerEnv); name != "" {
		os.Exit(runWorker(name))
	}
	os.Exit(m.Run())
}

// workerResult is what a worker prints on stdout.
type workerResult struct {
	OK     int      `json:"ok"`
	Errors []string `json:"errors"`
}

// runWorker is one replica of a program: a server-backed source under
// client.Transport, and workerRoutines goroutines calling the API once each.
func runWorker(name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := workerResult{}
	report := func() int {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return 0
	}
	api, err := remote.New(remote.Config{BaseURL: os.Getenv(workerBase), APIKey: os.Getenv(workerKey)})
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return report()
	}
	src, err := remote.NewTokenSource(remote.SourceConfig{Client: api, ConnectionID: os.Getenv(workerConn)})
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return report()
	}
	// Every replica holds the token before its requests start, as a
	// program that has been running a while does.
	if _, err := src.Token(ctx); err != nil {
		res.Errors = append(res.Errors, "first token: "+err.Error())
		return report()
	}
	hc := &http.Client{Transport: &client.Transport{Source: src}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range workerRoutines {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, os.Getenv(workerAPI)+"/?id="+fmt.Sprintf("%s-%d", name, i), nil)
			resp, err := hc.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Errors = append(res.Errors, err.Error())
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				res.OK++
			} else {
				res.Errors = append(res.Errors, fmt.Sprintf("HTTP %d", resp.StatusCode))
			}
		})
	}
	wg.Wait()
	return report()
}

// attempt is one request the API received.
type attempt struct {
	old    bool // sent with the token the provider had expired
	status int
}

// Three processes of one program, 100 goroutines each, hold the same
// connection's token from a real tokenbroker server. The provider has
// expired that token early, which neither the server nor the processes can
// know, and the API answers 401 invalid_token to it. Every request is
// refreshed and replayed exactly once, and the provider sees exactly one
// refresh: each process reports the stale token once (its goroutines share
// one call), and the server refreshes once for all three reports.
func TestRemoteSourceOneRefreshAcrossProcesses(t *testing.T) {
	const procs = 3
	const total = procs * workerRoutines
	authz := authztest.New(t, authztest.Options{})
	srv := startServer(t, authz, "")
	admin := srv.client(t, srv.key)
	access, refresh, _ := authz.IssueTokens(t, "read")
	if _, err := admin.CreateConnection(t.Context(), remote.ImportRequest{ID: "shared", Provider: "acme",
		AccessToken: access, RefreshToken: refresh, ExpiresIn: 3600}); err != nil {
		t.Fatalf("import: %v", err)
	}
	tokensKey := srv.newKey(t, "tokens")
	authz.Expire(t, access)

	var (
		mu       sync.Mutex
		attempts = map[string][]attempt{}
		oldSeen  int
		active   = map[string]bool{}
		release  = make(chan struct{})
	)
	// The API holds its answers to the old token until all requests have
	// arrived with it, so every request is sent with the old token first
	// whatever the scheduling; then it rejects them all at once.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		id := r.URL.Query().Get("id")
		if tok == access {
			mu.Lock()
			oldSeen++
			if oldSeen == total {
				close(release)
			}
			mu.Unlock()
			select {
			case <-release:
			case <-time.After(time.Minute): // reported below as missing requests
			}
			mu.Lock()
			attempts[id] = append(attempts[id], attempt{old: true, status: http.StatusUnauthorized})
			mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		ok, known := active[tok]
		mu.Unlock()
		if !known {
			ok = authz.Active(t, tok)
			mu.Lock()
			active[tok] = ok
			mu.Unlock()
		}
		status := http.StatusOK
		if !ok {
			status = http.StatusUnauthorized
		}
		mu.Lock()
		attempts[id] = append(attempts[id], attempt{status: status})
		mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(api.Close)

	results := make([]workerResult, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for p := range procs {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(),
				fmt.Sprintf("%s=w%d", workerEnv, p), workerBase+"="+srv.base, workerKey+"="+tokensKey,
				workerConn+"=shared", workerAPI+"="+api.URL)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err == nil {
				err = json.Unmarshal(out, &results[p])
			}
			if err != nil {
				errs[p] = fmt.Errorf("worker %d: %v; stderr: %s", p, err, stderr.String())
			}
		})
	}
	wg.Wait()
	for p := range procs {
		if errs[p] != nil {
			t.Fatal(errs[p])
		}
		if results[p].OK != workerRoutines {
			t.Errorf("worker %d: %d of %d requests succeeded; errors: %q", p, results[p].OK, workerRoutines, first(results[p].Errors, 5))
		}
	}
	// A replica that reports the old token late gets the new one without
	// another refresh.
	late, err := srv.client(t, tokensKey).ReportStale(t.Context(), "shared", access)
	if err != nil || late.AccessToken == access {
		t.Errorf("a late report of the old token: %v; want the new token", err)
	}
	if n := authz.RefreshCalls(); n != 1 {
		t.Errorf("the provider saw %d refreshes, want exactly 1", n)
	}
	if n := authz.ReuseDetected(); n != 0 {
		t.Errorf("the provider detected %d refresh-token reuses, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != total {
		t.Errorf("the API saw %d distinct requests, want %d", len(attempts), total)
	}
	bad := 0
	for _, as := range attempts {
		if len(as) != 2 || !as[0].old || as[0].status != http.StatusUnauthorized || as[1].old || as[1].status != http.StatusOK {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d requests were not exactly: old token → 401, then one replay with a new token → 200", bad)
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
