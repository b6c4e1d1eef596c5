package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct {
		dsn, want string
	}{
		{"postgres://postgres@/tokenbroker_test?host=/tmp/x/sock&port=5432",
			"postgres://postgres@/tb_1?host=/tmp/x/sock&port=5432"},
		{"postgresql://u:p@127.0.0.1:5433/db?sslmode=disable",
			"postgresql://u:p@127.0.0.1:5433/tb_1?sslmode=disable"},
		{"postgres://127.0.0.1", "postgres://127.0.0.1/tb_1"},
		{"host=/tmp/x dbname=tokenbroker_test", "host=/tmp/x dbname=tokenbroker_test dbname=tb_1"},
	} {
		got, err := withDatabase(tc.dsn, "tb_1")
		if err != nil || got != tc.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.dsn, got, err, tc.want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil || cfg.Database != "tb_1" {
			t.Errorf("%q parses to database %q (%v), want tb_1", got, cfg.Database, err)
		}
	}
}

// TestFreshDatabase: each call gets its own empty database, gone once its
// test has ended.
func TestFreshDatabase(t *testing.T) {
	var names [2]string
	t.Run("create", func(t *testing.T) {
		for i := range names {
			dsn := FreshDatabase(t)
			conn, err := pgx.Connect(t.Context(), dsn)
			if err != nil {
				t.Fatalf("connect to fresh database: %v", err)
			}
			var tables int
			err = conn.QueryRow(t.Context(), `SELECT current_database(),
				(SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public')`).Scan(&names[i], &tables)
			conn.Close(context.WithoutCancel(t.Context()))
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			if tables != 0 {
				t.Errorf("fresh database %s has %d tables, want 0", names[i], tables)
			}
		}
		if names[0] == names[1] {
			t.Errorf("two fresh databases share the name %s", names[0])
		}
	})
	if t.Failed() {
		return
	}
	conn, err := pgx.Connect(t.Context(), DSN(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	var left int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_database WHERE datname = ANY($1)`, names[:]).Scan(&left); err != nil {
		t.Fatalf("query: %v", err)
	}
	if left != 0 {
		t.Errorf("%d of the fresh databases %v outlived their test", left, names)
	}
}
