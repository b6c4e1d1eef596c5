package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding the DSN of the server
// tests use. scripts/test.sh sets it; CI must.
const EnvDSN = "TOKENBROKER_TEST_POSTGRES"

// private is the server this test binary started because EnvDSN was unset.
// It is package state on purpose: one server per test process, shared by
// every test in it, started on first use.
var private struct {
	once sync.Once
	mu   sync.Mutex
	dir  string // "" once stopped
	dsn  string
	err  error
}

// DSN returns the DSN of a PostgreSQL server for tests: the one named by
// $TOKENBROKER_TEST_POSTGRES, or else a throwaway server this process
// starts once with scripts/pg.sh and shares between its tests. Under CI
// (the CI variable is set) a missing TOKENBROKER_TEST_POSTGRES fails the
// test, so that PostgreSQL coverage cannot silently disappear; elsewhere a
// server that cannot be started skips it, with the reason.
//
// Tests should not use this database directly but call [FreshDatabase].
func DSN(t testing.TB) string {
	t.Helper()
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return dsn
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PostgreSQL tests must run in CI: " + EnvDSN + " is not set")
	}
	private.once.Do(startPrivate)
	private.mu.Lock()
	dsn, err := private.dsn, private.err
	private.mu.Unlock()
	if err != nil {
		t.Skipf("no PostgreSQL for this test: %v (set %s to use a running server)", err, EnvDSN)
	}
	return dsn
}

// FreshDatabase creates an empty database with a unique name on the
// [DSN] server, drops it when the test ends, and returns its DSN.
func FreshDatabase(t testing.TB) string {
	t.Helper()
	base := DSN(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "tb_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// FILE_COPY copies the small template in a few file copies and is
	// several times faster here than PostgreSQL 15's default WAL_LOG;
	// servers before 15 know neither.
	if err := adminExec(ctx, base, "CREATE DATABASE "+name+" STRATEGY FILE_COPY"); err != nil {
		if err := adminExec(ctx, base, "CREATE DATABASE "+name); err != nil {
			t.Fatalf("pgtest: create database %s: %v", name, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE ends sessions a test left open, such as a store it did
		// not close.
		if err := adminExec(ctx, base, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(base, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Run runs the tests and then stops the server this process started, if
// any; use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
//
// Without it the server still goes away: scripts/pg.sh's watchdog stops it
// and deletes its files within seconds of the test process exiting.
func Run(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the server this process started, if any, and deletes its
// files. Tests that call [DSN] afterwards are skipped.
func Stop() {
	private.mu.Lock()
	defer private.mu.Unlock()
	if private.dir == "" {
		return
	}
	if script, err := script(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = exec.CommandContext(ctx, "bash", script, "stop", private.dir).Run()
	}
	_ = os.RemoveAll(private.dir)
	private.dir = ""
	private.err = errors.New("the test server was stopped")
}

func startPrivate() {
	private.mu.Lock()
	defer private.mu.Unlock()
	script, err := script()
	if err != nil {
		private.err = err
		return
	}
	// A short path under the system temp directory: the server's unix
	// socket lives in it, and the postgres OS user must be able to reach
	// it when the tests run as root.
	dir, err := os.MkdirTemp("", "tbpg-")
	if err != nil {
		private.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, "start", dir, "--until-pid", strconv.Itoa(os.Getpid()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		_ = exec.Command("bash", script, "stop", dir).Run()
		_ = os.RemoveAll(dir)
		private.err = fmt.Errorf("scripts/pg.sh start: %v: %s", err, lastLines(stderr.String(), 5))
		return
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	private.dir, private.dsn = dir, strings.TrimSpace(lines[len(lines)-1])
}

// script finds scripts/pg.sh: upward from the working directory (a test
// runs in its package's directory), or else next to this source file.
func script() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, "scripts", "pg.sh")
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("scripts/pg.sh not found above the working directory")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func adminExec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns dsn with its database replaced by name. It accepts
// both forms pgx does: a URL and key=value pairs (where a later dbname
// overrides an earlier one).
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// url's errors quote the whole string, password included.
			return "", errors.New("the test server DSN is not a valid URL")
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil
}
