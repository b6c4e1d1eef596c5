package app_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/invariant"
	"github.com/tokenbroker/tokenbroker/seal"
)

var (
	invariantOps  = flag.Int("invariant.ops", 2000, "operations of TestInvariants")
	invariantSeed = flag.Int64("invariant.seed", 0, "seed of TestInvariants; 0 picks one (it is logged)")
)

// single is one in-process tokenbroker on a SQLite file, as invariant.Target.
type single struct {
	dir  string
	a    *app.App
	base string
	key  string
}

func (s *single) Replicas() int             { return 1 }
func (s *single) URL(int) string            { return s.base }
func (s *single) AdminKey() string          { return s.key }
func (s *single) Kill(testing.TB, int) bool { return false }
func (s *single) Restart(testing.TB, int)   {}

func (s *single) Stored(t testing.TB, id string) (invariant.Row, bool) {
	c, err := s.a.Store.GetConnection(context.Background(), id)
	if err != nil {
		return invariant.Row{}, false
	}
	row := invariant.Row{Status: string(c.Status), RefreshInFlight: !c.RefreshStartedAt.IsZero()}
	if c.Failure != nil {
		row.FailureCode = c.Failure.Code
	}
	if len(c.RefreshToken) > 0 {
		p, err := s.a.Keys.Open(c.RefreshToken, []byte("conn:"+id+":refresh"))
		if err != nil {
			t.Fatalf("open %s's refresh token: %v", id, err)
		}
		row.RefreshToken = string(p)
	}
	return row, true
}

func (s *single) Events(t testing.TB, id string) []string {
	evs, err := s.a.Store.ConnectionEvents(context.Background(), id, 500)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 500 {
		t.Fatalf("%s has more history than one page; use fewer operations per id", id)
	}
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.Type)
	}
	slices.Reverse(out)
	return out
}

func (s *single) RotateKeys(t testing.TB) {
	if _, err := seal.Rotate(filepath.Join(s.dir, "keys")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * app.KeyFileFreshness) // as `tokenbroker keys rotate` waits before re-sealing
	if _, err := s.a.Broker.Reseal(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestInvariants plays a seeded random sequence of operations against one
// server on SQLite, with the scheduler running, against the fosite server
// rotating refresh tokens strictly with reuse detection and with injected
// faults, and checks after every step that no grant is lost, spent twice or
// served for the wrong connection (package invariant). Replay a failure
// with -invariant.seed; soak with -invariant.ops (docs/testing.md).
func TestInvariants(t *testing.T) {
	seed := *invariantSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	authz := authztest.New(t, authztest.Options{})
	api := invariant.NewUpstream(t, seed)
	dir := t.TempDir()
	t.Setenv("INVARIANT_SECRET", authz.ClientSecret)
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %[1]s
database: sqlite:%[1]s/tokenbroker.db
encryption_keys_file: %[1]s/keys
log_level: warn
refresh:
  timeout: 1s
  lease_ttl: 2s
scheduler:
  interval: 100ms
providers:
  - name: %[2]s
    token_url: %[3]s
    revocation_url: %[4]s
    client_id: %[5]s
    client_secret_env: INVARIANT_SECRET
    api_base_url: %[6]s
    rotation: rotate
`, dir, invariant.Provider, authz.TokenURL(), authz.RevocationURL(), authz.ClientID, api.URL)
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveApp(t, cfgPath, nil, app.Options{Logger: slog.New(slog.DiscardHandler)}, time.Now())
	t.Cleanup(func() { _ = srv.stop() })
	tgt := &single{dir: dir, a: srv.a, base: srv.base, key: srv.key}
	invariant.Run(t, tgt, authz, api, invariant.Config{
		Seed: seed, Ops: *invariantOps, IDs: 8,
		RefreshTimeout: time.Second, OnErrorInterval: 30 * time.Second,
	})
}
