package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenbroker/tokenbroker/internal/pgtest"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

func openFresh(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	dsn := pgtest.FreshDatabase(t)
	s, err := Open(t.Context(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, dsn
}

func TestConformance(t *testing.T) {
	storetest.RunTests(t, func(t *testing.T, now func() time.Time) store.Backend {
		s, _ := openFresh(t, Options{Now: now})
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

// admin runs statements on the test server's maintenance database, outside
// the store under test.
func admin(t testing.TB, sql ...string) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	conn, err := pgx.Connect(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatalf("admin connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("admin %q: %v", q, err)
		}
	}
}

func databaseName(t testing.TB, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return cfg.Database
}

// TestConcurrentMigrations starts ten stores on one new database at the
// same moment, as replicas of a fresh deployment would: all must open, and
// each migration must be applied exactly once.
func TestConcurrentMigrations(t *testing.T) {
	const replicas = 10
	dsn := pgtest.FreshDatabase(t)
	migrations, err := loadMigrations(embeddedMigrations())
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}

	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			<-begin
			stores[i], errs[i] = Open(t.Context(), dsn, Options{MaxConns: 2})
		})
	}
	close(begin)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: Open: %v", i, err)
			continue
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	if t.Failed() {
		t.FailNow()
	}

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, _ := conn.Query(t.Context(), `SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version`)
	type applied struct {
		Version int32
		Count   int64
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[applied])
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	if len(got) != len(migrations) {
		t.Errorf("schema_migrations has %d versions, want %d", len(got), len(migrations))
	}
	for i, a := range got {
		if a.Count != 1 {
			t.Errorf("version %d recorded %d times, want once", a.Version, a.Count)
		}
		if i < len(migrations) && int(a.Version) != migrations[i].Version {
			t.Errorf("version #%d = %d, want %d", i, a.Version, migrations[i].Version)
		}
	}

	// Every replica works against the one schema.
	for i, s := range stores {
		c := fakeConnection(fmt.Sprintf("conn-replica-%02d", i))
		if _, err := s.CreateConnection(t.Context(), c); err != nil {
			t.Errorf("replica %d: CreateConnection: %v", i, err)
		}
	}
	page, err := stores[0].ListConnections(t.Context(), store.ListOptions{})
	if err != nil || len(page.Connections) != replicas {
		t.Errorf("ListConnections = %d rows, %v; want %d", len(page.Connections), err, replicas)
	}
}

func TestMigrationsIdempotentAndNewerSchemaRefused(t *testing.T) {
	s, dsn := openFresh(t, Options{})
	if _, err := s.CreateConnection(t.Context(), fakeConnection("conn-kept")); err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	again, err := Open(t.Context(), dsn, Options{})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if _, err := again.GetConnection(t.Context(), "conn-kept"); err != nil {
		t.Errorf("GetConnection through the reopened store: %v", err)
	}
	_ = again.Close()

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	if _, err := conn.Exec(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', now())`); err != nil {
		t.Fatalf("insert future version: %v", err)
	}
	_, err = Open(t.Context(), dsn, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this build") {
		t.Errorf("Open on a newer schema: err = %v, want a refusal naming the newer schema", err)
	}
}

// TestDatabaseOutage cuts the store's database off (its sessions ended and
// new ones refused) without stopping the shared test server: while it is
// down every call fails fast with store.ErrUnavailable, and once it is back
// the same Store works again with nothing lost.
func TestDatabaseOutage(t *testing.T) {
	s, dsn := openFresh(t, Options{MaxConns: 4})
	db := databaseName(t, dsn)
	ctx := t.Context()
	created, err := s.CreateConnection(ctx, fakeConnection("conn-outage"))
	if err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	terminate := `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + db + `' AND pid <> pg_backend_pid()`

	calls := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"GetConnection", func() error { _, err := s.GetConnection(ctx, "conn-outage"); return err }},
		{"ListConnections", func() error { _, err := s.ListConnections(ctx, store.ListOptions{}); return err }},
		{"CreateConnection", func() error { _, err := s.CreateConnection(ctx, fakeConnection("conn-during-outage")); return err }},
		{"CompareAndSwap", func() error { _, err := s.CompareAndSwap(ctx, created); return err }},
		{"UpdateConnection", func() error {
			_, err := s.UpdateConnection(ctx, "conn-outage", func(c store.Connection) (store.Connection, []store.Event, error) { return c, nil, nil })
			return err
		}},
		{"AcquireLease", func() error { _, err := s.AcquireLease(ctx, "conn-outage", "owner", time.Minute); return err }},
		{"CountAPIKeys", func() error { _, err := s.CountAPIKeys(ctx); return err }},
	}

	t.Run("blip", func(t *testing.T) {
		// Warm the pool so that it holds connections the blip kills.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _ = s.Ping(ctx) })
		}
		wg.Wait()
		admin(t, terminate)
		// Reads retry on a fresh connection; a write that met a dead
		// connection may fail, but only with ErrUnavailable.
		if _, err := s.GetConnection(ctx, "conn-outage"); err != nil {
			t.Errorf("GetConnection right after the blip: %v", err)
		}
		for _, c := range calls {
			if err := c.call(); err != nil && !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s right after the blip: err = %v, want nil or ErrUnavailable", c.name, err)
			}
		}
	})

	t.Run("down", func(t *testing.T) {
		admin(t, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS false`, terminate)
		t.Cleanup(func() { admin(t, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS true`) })
		for _, c := range calls {
			if err := c.call(); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s while the database is down: err = %v, want ErrUnavailable", c.name, err)
			}
		}
	})

	t.Run("recovered", func(t *testing.T) {
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping after recovery: %v", err)
		}
		got, err := s.GetConnection(ctx, "conn-outage")
		if err != nil {
			t.Fatalf("GetConnection after recovery: %v", err)
		}
		if string(got.AccessToken) != string(created.AccessToken) || string(got.RefreshToken) != string(created.RefreshToken) {
			t.Error("tokens changed across the outage")
		}
		updated, err := s.UpdateConnection(ctx, got.ID, func(c store.Connection) (store.Connection, []store.Event, error) {
			c.Scope = "after-outage"
			return c, nil, nil
		})
		if err != nil {
			t.Fatalf("UpdateConnection after recovery: %v", err)
		}
		if updated.Version != got.Version+1 {
			t.Errorf("Version = %d, want %d", updated.Version, got.Version+1)
		}
	})
}

func TestUnreachable(t *testing.T) {
	// A unix socket directory with no server in it: connecting is refused
	// at once, with no network involved.
	dir := t.TempDir()
	dsn := "postgres://postgres@/tokenbroker?host=" + dir + "&connect_timeout=5"
	_, err := Open(t.Context(), dsn, Options{})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open with no server: err = %v, want ErrUnavailable", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = Open(ctx, dsn, Options{})
	if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open with a cancelled context: err = %v, want context.Canceled and not ErrUnavailable", err)
	}

	if _, err := Open(t.Context(), "postgres://[bad", Options{}); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open with a malformed DSN: err = %v, want a configuration error", err)
	}
}

func TestPasswordNotInErrors(t *testing.T) {
	dsn := "postgres://postgres:fake-secret-password@/tokenbroker?host=" + t.TempDir()
	_, err := Open(t.Context(), dsn, Options{})
	if err == nil {
		t.Fatal("Open with no server succeeded")
	}
	if strings.Contains(err.Error(), "fake-secret-password") {
		t.Error("the DSN's password appears in Open's error")
	}
}

// TestCallerGivesUp: a caller that cancels gets its own error back, not
// ErrUnavailable (the server must not answer 503 to a client that left); a
// deadline that passes while waiting for a pooled connection is
// ErrUnavailable.
func TestCallerGivesUp(t *testing.T) {
	s, _ := openFresh(t, Options{MaxConns: 1})
	if _, err := s.CreateConnection(t.Context(), fakeConnection("conn-1")); err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.GetConnection(ctx, "conn-1")
	if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetConnection with a cancelled context: err = %v, want context.Canceled only", err)
	}

	// Hold the only connection so that the next call must wait for it.
	held, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer held.Release()
	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = s.GetConnection(ctx, "conn-1")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetConnection past its deadline waiting for a connection: err = %v, want ErrUnavailable", err)
	}
}

func TestTextPostgresCannotHold(t *testing.T) {
	s, _ := openFresh(t, Options{})
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		modify func(*store.Connection)
	}{
		{"NUL in id", func(c *store.Connection) { c.ID = "conn\x00x" }},
		{"invalid UTF-8 id", func(c *store.Connection) { c.ID = "conn\xff" }},
		{"NUL in scope", func(c *store.Connection) { c.Scope = "read\x00" }},
		{"NUL escape in metadata", func(c *store.Connection) { c.Metadata = json.RawMessage(`{"a":"\u0000"}`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeConnection("conn-text")
			tc.modify(&c)
			_, err := s.CreateConnection(ctx, c)
			if err == nil {
				t.Fatal("CreateConnection succeeded, want an error")
			}
			if errors.Is(err, store.ErrUnavailable) {
				t.Errorf("err = %v, want a plain input error, not ErrUnavailable", err)
			}
		})
	}
	for _, id := range []string{"conn\x00x", "conn\xff"} {
		if _, err := s.GetConnection(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetConnection(%q): err = %v, want ErrNotFound", id, err)
		}
		if _, err := s.AcquireLease(ctx, id, "owner", time.Minute); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AcquireLease(%q): err = %v, want ErrNotFound", id, err)
		}
	}
	if n, err := s.ListConnections(ctx, store.ListOptions{}); err != nil || len(n.Connections) != 0 {
		t.Errorf("ListConnections = %d rows, %v; want none after rejected creates", len(n.Connections), err)
	}
}

func BenchmarkGetConnection(b *testing.B) {
	s, _ := openFresh(b, Options{})
	ctx := b.Context()
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
	s, _ := openFresh(b, Options{})
	ctx := b.Context()
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
	s, _ := openFresh(b, Options{})
	ctx := b.Context()
	c, err := s.CreateConnection(ctx, fakeConnection("c1"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c.LastUsedAt = c.UpdatedAt
		if c, err = s.CompareAndSwap(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}
