package sqlite

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/storetest"
)

func openTemp(t testing.TB, now func() time.Time) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "tokenbroker.db")
	s, err := Open(context.Background(), path, Options{Now: now, Logger: discard()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestConformance(t *testing.T) {
	storetest.RunTests(t, func(t *testing.T, now func() time.Time) store.Backend {
		s, _ := openTemp(t, now)
		return s
	})
}

func fakeConnection(id string) store.Connection {
	return store.Connection{
		ID:           id,
		Provider:     "acme",
		Status:       store.StatusActive,
		AccessToken:  []byte("fake-sealed-access"),
		RefreshToken: []byte("fake-sealed-refresh"),
		Metadata:     json.RawMessage(`{"n":0}`),
	}
}

func TestFileModes(t *testing.T) {
	s, path := openTemp(t, nil)
	// A write makes sure the -wal and -shm files exist.
	if _, err := s.CreateConnection(t.Context(), fakeConnection("c1")); err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{
		{filepath.Dir(path), 0o700 | os.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
		{path + "-shm", 0o600},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Errorf("stat %s: %v", filepath.Base(tc.path), err)
			continue
		}
		if got := fi.Mode() & (os.ModeDir | os.ModePerm); got != tc.want {
			t.Errorf("%s mode = %v, want %v", filepath.Base(tc.path), got, tc.want)
		}
	}
}

func TestLooseFileModeWarns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenbroker.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := Open(t.Context(), path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "accessible to other users") {
		t.Errorf("no warning logged for a 0644 database file; logs: %q", logs.String())
	}
}

func TestCanceledContext(t *testing.T) {
	s, _ := openTemp(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.GetConnection(ctx, "c1")
	if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetConnection with a canceled context: err = %v, want context.Canceled and not ErrUnavailable", err)
	}
	_, err = s.CreateConnection(ctx, fakeConnection("c1"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("CreateConnection with a canceled context: err = %v, want context.Canceled", err)
	}
}

// TestPragmasOnEveryConnection holds every pooled connection at once, so
// the pools must have opened each of them, and checks each one's settings.
func TestPragmasOnEveryConnection(t *testing.T) {
	s, _ := openTemp(t, nil)
	ctx := t.Context()
	type pooled struct {
		name     string
		conn     *sql.Conn
		readOnly bool
	}
	w, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatalf("writer conn: %v", err)
	}
	defer w.Close()
	conns := []pooled{{"writer", w, false}}
	for i := range readConns {
		r, err := s.r.Conn(ctx)
		if err != nil {
			t.Fatalf("reader conn %d: %v", i, err)
		}
		defer r.Close()
		conns = append(conns, pooled{fmt.Sprintf("reader %d", i), r, true})
	}
	for _, c := range conns {
		want := map[string]string{
			"journal_mode": "wal",
			"foreign_keys": "1",
			"synchronous":  "1", // NORMAL
			"busy_timeout": fmt.Sprint(busyTimeout.Milliseconds()),
			"query_only":   "0",
		}
		if c.readOnly {
			want["query_only"] = "1"
		}
		for pragma, wantV := range want {
			var got string
			if err := c.conn.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Errorf("%s: PRAGMA %s: %v", c.name, pragma, err)
			} else if got != wantV {
				t.Errorf("%s: PRAGMA %s = %q, want %q", c.name, pragma, got, wantV)
			}
		}
	}
	// A read-only connection really refuses writes.
	if _, err := conns[1].conn.ExecContext(ctx, `DELETE FROM connections`); err == nil {
		t.Error("a reader connection accepted a write")
	}
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	first := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "tokenbroker.db")
	s, err := Open(ctx, path, Options{Now: func() time.Time { return first }})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	want, err := s.CreateConnection(ctx, fakeConnection("c1"))
	if err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	later := first.Add(24 * time.Hour)
	s, err = Open(ctx, path, Options{Now: func() time.Time { return later }})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.GetConnection(ctx, "c1")
	if err != nil {
		t.Fatalf("GetConnection after reopen: %v", err)
	}
	if !bytes.Equal(got.AccessToken, want.AccessToken) || !bytes.Equal(got.RefreshToken, want.RefreshToken) ||
		got.Version != want.Version || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Error("connection changed across reopen")
	}

	rows, err := s.r.QueryContext(ctx, `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("query schema_migrations: %v", err)
	}
	defer rows.Close()
	var applied []int64
	for rows.Next() {
		var v, at int64
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		applied = append(applied, v)
		if at != first.UnixMicro() {
			t.Errorf("migration %d applied_at = %v, want the first open's %v: it ran again", v, time.UnixMicro(at).UTC(), first)
		}
	}
	// Every embedded migration, each applied once.
	all, err := loadMigrations(embeddedMigrations())
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, m := range all {
		versions = append(versions, int64(m.Version))
	}
	if !slices.Equal(applied, versions) {
		t.Errorf("schema_migrations versions = %v, want %v", applied, versions)
	}
}

// TestTokenBytesRoundTrip: a refresh-token-bearing connection's sealed bytes
// come back exactly, through every write path and a reopen.
func TestTokenBytesRoundTrip(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "tokenbroker.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	access, refresh := make([]byte, 2048), make([]byte, 4096)
	rand.Read(access)
	rand.Read(refresh)
	refresh[0], refresh[len(refresh)-1] = 0, 0 // NULs at both ends

	c := fakeConnection("c1")
	c.AccessToken, c.RefreshToken = bytes.Clone(access), bytes.Clone(refresh)
	created, err := s.CreateConnection(ctx, c)
	if err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	// Mutating the caller's slices afterwards must not reach the store.
	c.RefreshToken[1] ^= 0xff
	check := func(what string, got store.Connection, access, refresh []byte) {
		t.Helper()
		if !bytes.Equal(got.AccessToken, access) {
			t.Errorf("%s: access token differs (len %d, want %d)", what, len(got.AccessToken), len(access))
		}
		if !bytes.Equal(got.RefreshToken, refresh) {
			t.Errorf("%s: refresh token differs (len %d, want %d)", what, len(got.RefreshToken), len(refresh))
		}
	}
	check("create", created, access, refresh)
	got, err := s.GetConnection(ctx, "c1")
	if err != nil {
		t.Fatalf("GetConnection: %v", err)
	}
	check("get", got, access, refresh)

	rotated := make([]byte, 3000)
	rand.Read(rotated)
	got, err = s.UpdateConnection(ctx, "c1", func(old store.Connection) (store.Connection, []store.Event, error) {
		old.RefreshToken = bytes.Clone(rotated)
		return old, nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	check("update", got, access, rotated)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err = s.GetConnection(ctx, "c1")
	if err != nil {
		t.Fatalf("GetConnection after reopen: %v", err)
	}
	check("reopen", got, access, rotated)
}

// TestMigrationsAtomic: a failing migration leaves no trace, neither its own
// statements that ran nor the bookkeeping row.
func TestMigrationsAtomic(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "tokenbroker.db")
	if err := prepareFile(path, discard()); err != nil {
		t.Fatal(err)
	}
	db, err := openPool(ctx, dsn(path, false), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now
	log := discard()

	good := fstest.MapFS{"0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")}}
	migs, err := loadMigrations(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migs, now, log); err != nil {
		t.Fatalf("migrate 0001: %v", err)
	}
	bad := fstest.MapFS{
		"0001_a.sql": good["0001_a.sql"],
		"0002_b.sql": {Data: []byte("CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (1);")},
		"0003_c.sql": {Data: []byte("CREATE TABLE c (x INTEGER); SELECT nonsense FROM nowhere;")},
	}
	if migs, err = loadMigrations(bad); err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migs, now, log); err == nil || !strings.Contains(err.Error(), "0003_c.sql") {
		t.Fatalf("migrate with a broken 0003: err = %v, want a failure naming 0003_c.sql", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name IN ('b', 'c')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("tables from the failed run: %d (%v), want 0", n, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM a`).Scan(&n); err != nil || n != 0 {
		t.Errorf("rows the failed run inserted: %d (%v), want 0", n, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&n); err != nil || n != 1 {
		t.Errorf("schema version after failed run = %d (%v), want 1", n, err)
	}
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no version":     {"init.sql": {}},
		"zero version":   {"0000_init.sql": {}},
		"duplicate":      {"0001_a.sql": {}, "1_b.sql": {}},
		"no migrations":  {},
		"letters prefix": {"v1_init.sql": {}},
	} {
		if _, err := loadMigrations(fsys); err == nil {
			t.Errorf("%s: loadMigrations succeeded, want an error", name)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := t.Context()
	s, path := openTemp(t, nil)
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(ctx, path, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a database from a newer build: err = %v, want a refusal", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		path        string
		unavailable bool
	}{
		{"empty", "", false},
		{"query string", filepath.Join(dir, "x.db?mode=ro"), false},
		{"uri", "file:" + filepath.Join(dir, "x.db"), false},
		{"memory", ":memory:", false},
		{"directory", dir, true},
		{"parent is a file", filepath.Join(blocker, "x.db"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if got := errors.Is(err, store.ErrUnavailable); got != tc.unavailable {
				t.Errorf("errors.Is(err, ErrUnavailable) = %v, want %v (err: %v)", got, tc.unavailable, err)
			}
		})
	}
}

// TestTwoStoresOneFile stands in for two processes on one file: their
// writers contend on SQLite's file lock, which busy_timeout must absorb.
func TestTwoStoresOneFile(t *testing.T) {
	ctx := t.Context()
	a, path := openTemp(t, nil)
	b, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer b.Close()
	if _, err := a.CreateConnection(ctx, fakeConnection("c1")); err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	const perStore = 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*perStore)
	for _, s := range []*Store{a, b} {
		for range perStore {
			wg.Go(func() {
				for range 2 * perStore {
					_, err := s.UpdateConnection(ctx, "c1", func(old store.Connection) (store.Connection, []store.Event, error) {
						var m struct{ N int }
						if err := json.Unmarshal(old.Metadata, &m); err != nil {
							return old, nil, err
						}
						old.Metadata, _ = json.Marshal(map[string]int{"n": m.N + 1})
						return old, nil, nil
					})
					if errors.Is(err, store.ErrConflict) {
						continue
					}
					if err != nil {
						errs <- err
					}
					return
				}
				errs <- errors.New("still conflicting after more attempts than other writers")
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := b.GetConnection(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ N int }
	if err := json.Unmarshal(got.Metadata, &m); err != nil || m.N != 2*perStore || got.Version != 1+2*perStore {
		t.Errorf("counter = %d, version %d (%v); want %d, %d", m.N, got.Version, err, 2*perStore, 1+2*perStore)
	}
}

func BenchmarkGetConnection(b *testing.B) {
	s, _ := openTemp(b, nil)
	ctx := context.Background()
	if _, err := s.CreateConnection(ctx, fakeConnection("c1")); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.GetConnection(ctx, "c1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetConnectionParallel(b *testing.B) {
	s, _ := openTemp(b, nil)
	ctx := context.Background()
	if _, err := s.CreateConnection(ctx, fakeConnection("c1")); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetConnection(ctx, "c1"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkCompareAndSwap(b *testing.B) {
	s, _ := openTemp(b, nil)
	ctx := context.Background()
	c, err := s.CreateConnection(ctx, fakeConnection("c1"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c.LastUsedAt = time.Now()
		if c, err = s.CompareAndSwap(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}
