package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// watchBuffer is an output stream a test can wait on.
type watchBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newWatchBuffer() *watchBuffer { return &watchBuffer{changed: make(chan struct{})} }

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor waits until the output matches re and returns the first
// submatch (or the whole match).
func (w *watchBuffer) waitFor(t *testing.T, re *regexp.Regexp, exited <-chan int) string {
	t.Helper()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	for {
		w.mu.Lock()
		m := re.FindStringSubmatch(w.b.String())
		ch := w.changed
		w.mu.Unlock()
		if m != nil {
			return m[len(m)-1]
		}
		select {
		case <-ch:
		case code := <-exited:
			t.Fatalf("the command exited (%d) before printing %s:\n%s", code, re, w.String())
		case <-timeout.C:
			t.Fatalf("no %s in the output:\n%s", re, w.String())
		}
	}
}

// server is `tokenbroker serve` running in-process.
type serveProc struct {
	stdout, stderr *watchBuffer
	base           string
	cancel         func()
	exited         chan int
}

var listeningRE = regexp.MustCompile(`msg="tokenbroker listening" addr=(\S+)`)

func startServe(t *testing.T, args ...string) *serveProc {
	t.Helper()
	s := &serveProc{stdout: newWatchBuffer(), stderr: newWatchBuffer(), exited: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.exited <- run(ctx, append([]string{"serve"}, args...), s.stdout, s.stderr) }()
	s.base = "http://" + s.stderr.waitFor(t, listeningRE, s.exited)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop cancels the server as a signal would and returns its exit status.
func (s *serveProc) stop(t *testing.T) int {
	if s.cancel == nil {
		return 0
	}
	s.cancel()
	s.cancel = nil
	code := <-s.exited
	return code
}

var bootstrapKeyRE = regexp.MustCompile(`(tbk_[A-Za-z0-9_-]+)`)

// A port already taken used to cost the bootstrap key: it was created and
// printed, then the bind failed, and the next start printed none.
func TestBootstrapKeyOnlyAfterBind(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv("TOKENBROKER_DATA_DIR", dir)

	code, out, errOut := runCLI(t, "serve", "--listen", busy.Addr().String())
	if code != exitFailure || strings.Contains(out, "tbk_") || !strings.Contains(errOut, "address already in use") || !strings.Contains(errOut, "--listen") {
		t.Fatalf("serve on a busy port: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}

	s := startServe(t, "--listen", "127.0.0.1:0")
	key := s.stdout.waitFor(t, bootstrapKeyRE, s.exited)
	req, _ := http.NewRequest("GET", s.base+"/v1/connections", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the bootstrap key printed after the failed start does not work: %d", resp.StatusCode)
	}
	// The container health check asks the running server.
	if code, out, errOut := runCLI(t, "healthcheck", "--url", s.base, "--path", "/readyz"); code != 0 || out != "ok\n" {
		t.Errorf("healthcheck: exit %d %q %q", code, out, errOut)
	}
	if code := s.stop(t); code != 0 {
		t.Errorf("orderly shutdown exited %d\n%s", code, s.stderr.String())
	}
	if code, _, _ := runCLI(t, "healthcheck", "--url", s.base); code != exitFailure {
		t.Errorf("healthcheck of a stopped server: exit %d", code)
	}
	if !strings.Contains(s.stderr.String(), "shutdown complete") {
		t.Errorf("no shutdown summary line:\n%s", s.stderr)
	}
}

// A rolling deploy migrates once, then starts replicas that do not.
func TestMigrateThenServeWithoutMigrating(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("TOKENBROKER_DATA_DIR", dir)
			if backend == "postgres" {
				t.Setenv("TOKENBROKER_DATABASE", pgtest.FreshDatabase(t))
			}
			code, _, errOut := runCLI(t, "serve", "--migrate=false", "--listen", "127.0.0.1:0")
			if code != exitFailure || !strings.Contains(errOut, "tokenbroker migrate up") {
				t.Fatalf("serve --migrate=false on an empty database: exit %d, %q", code, errOut)
			}
			code, out, errOut := runCLI(t, "migrate", "status")
			if code != exitFailure || !strings.Contains(out, "pending") || !strings.Contains(errOut, "migrations pending") {
				t.Fatalf("migrate status before: exit %d\n%s\n%s", code, out, errOut)
			}
			code, out, _ = runCLI(t, "migrate", "up")
			if code != 0 || !strings.Contains(out, "applied 0001") {
				t.Fatalf("migrate up: exit %d\n%s", code, out)
			}
			if code, out, _ := runCLI(t, "migrate", "up"); code != 0 || !strings.Contains(out, "up to date") {
				t.Errorf("migrate up again: exit %d\n%s", code, out)
			}
			code, out, _ = runCLI(t, "migrate", "status", "-o", "json")
			if code != 0 || !strings.Contains(out, `"pending": 0`) {
				t.Fatalf("migrate status after: exit %d\n%s", code, out)
			}
			s := startServe(t, "--migrate=false", "--listen", "127.0.0.1:0")
			if strings.Contains(s.stderr.String(), "applied migration") {
				t.Errorf("serve --migrate=false migrated:\n%s", s.stderr)
			}
			if code := s.stop(t); code != 0 {
				t.Errorf("exit %d", code)
			}
		})
	}
}

// The bootstrap key, the data directory and the listen address come from
// TOKENBROKER_* variables when there is no config file (containers).
func TestServeFromEnvironmentOnly(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TOKENBROKER_DATA_DIR", dir)
	t.Setenv("TOKENBROKER_LISTEN", "127.0.0.1:0")
	t.Setenv("TOKENBROKER_LOG_FORMAT", "json")
	s := startServeJSON(t)
	if _, err := os.Stat(filepath.Join(dir, "tokenbroker.db")); err != nil {
		t.Errorf("database not in TOKENBROKER_DATA_DIR: %v", err)
	}
	s.stop(t)
	// Durations in JSON logs are strings like "1m5s", not nanoseconds.
	if !regexp.MustCompile(`"grace":"1m5s"`).MatchString(s.stderr.String()) {
		t.Errorf("shutdown line does not carry grace as a duration string:\n%s", s.stderr)
	}
}

var listeningJSONRE = regexp.MustCompile(`"msg":"tokenbroker listening","addr":"([^"]+)"`)

func startServeJSON(t *testing.T, args ...string) *serveProc {
	t.Helper()
	s := &serveProc{stdout: newWatchBuffer(), stderr: newWatchBuffer(), exited: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.exited <- run(ctx, append([]string{"serve"}, args...), s.stdout, s.stderr) }()
	s.base = "http://" + s.stderr.waitFor(t, listeningJSONRE, s.exited)
	t.Cleanup(func() { s.stop(t) })
	return s
}
