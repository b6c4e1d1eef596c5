package cluster

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/invariant"
	"github.com/tokenbroker/tokenbroker/seal"
)

var (
	invariantOps   = flag.Int("invariant.ops", 600, "operations of TestInvariantsAcrossReplicas")
	invariantSeed  = flag.Int64("invariant.seed", 0, "seed of TestInvariantsAcrossReplicas; 0 picks one (it is logged)")
	invariantKills = flag.Int("invariant.kills", 3, "replicas TestInvariantsAcrossReplicas kills mid-refresh, at most")
)

// clusterTarget is the cluster as an invariant.Target.
type clusterTarget struct{ c *cluster }

func (ct clusterTarget) Replicas() int    { return len(ct.c.replicas) }
func (ct clusterTarget) URL(i int) string { return ct.c.replicas[i].base }
func (ct clusterTarget) AdminKey() string { return ct.c.key }

func (ct clusterTarget) query(t testing.TB, f func(conn *pgx.Conn) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, ct.c.dsn)
	if err != nil {
		t.Fatalf("connect to the cluster's database: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := f(conn); err != nil {
		t.Fatal(err)
	}
}

func (ct clusterTarget) Stored(t testing.TB, id string) (invariant.Row, bool) {
	var (
		row     invariant.Row
		code    *string
		refresh []byte
		found   bool
	)
	ct.query(t, func(conn *pgx.Conn) error {
		err := conn.QueryRow(context.Background(), `SELECT status, failure->>'code', refresh_token, refresh_started_at IS NOT NULL
			FROM connections WHERE id = $1`, id).
			Scan(&row.Status, &code, &refresh, &row.RefreshInFlight)
		if err == pgx.ErrNoRows {
			return nil
		}
		found = err == nil
		return err
	})
	if !found {
		return row, false
	}
	if code != nil {
		row.FailureCode = *code
	}
	if len(refresh) > 0 {
		ring, err := seal.Load(ct.c.keysFile)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ring.Open(refresh, []byte("conn:"+id+":refresh"))
		if err != nil {
			t.Fatalf("open %s's refresh token: %v", id, err)
		}
		row.RefreshToken = string(p)
	}
	return row, true
}

func (ct clusterTarget) Events(t testing.TB, id string) []string {
	var out []string
	ct.query(t, func(conn *pgx.Conn) error {
		rows, err := conn.Query(context.Background(), `SELECT type FROM outbox_events WHERE connection_id = $1 ORDER BY id`, id)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out
}

func (ct clusterTarget) Kill(_ testing.TB, i int) bool {
	ct.c.replicas[i].kill()
	return true
}

func (ct clusterTarget) Restart(t testing.TB, i int) {
	old := ct.c.replicas[i]
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s before it was killed, last lines:\n%s", old.name, lastLines(old.logs.String(), 60))
		}
	})
	r, err := ct.c.launch(i, ct.c.keysFile, ct.c.opts)
	if err != nil {
		t.Fatalf("restart replica %d: %v", i, err)
	}
	ct.c.replicas[i] = r
}

// RotateKeys runs `tokenbroker keys rotate` beside the running replicas,
// as an operator would.
func (ct clusterTarget) RotateKeys(t testing.TB) {
	cmd := exec.Command(binary, "keys", "rotate", "--config", filepath.Join(ct.c.dir, "replica-0.yaml"))
	cmd.Env = append(os.Environ(), secretEnv+"="+ct.c.authz.ClientSecret)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keys rotate: %v\n%s", err, out)
	}
}

// TestInvariantsAcrossReplicas is TestInvariants of internal/app on three
// replicas sharing one PostgreSQL database, with their schedulers running,
// calls spread over the replicas, and replicas killed (SIGKILL) in the
// middle of a refresh the provider has already processed: the provider
// rotates strictly and revokes the chain on reuse, so a takeover that sent
// the spent token again would show as reuse.
func TestInvariantsAcrossReplicas(t *testing.T) {
	seed := *invariantSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	authz := authztest.New(t, authztest.Options{})
	api := invariant.NewUpstream(t, seed)
	c := newCluster(t, authz, clusterOptions{
		replicas: 3, leaseTTL: "2s", refreshTimeout: "1s", rotation: "rotate", apiBaseURL: api.URL,
	})
	invariant.Run(t, clusterTarget{c}, authz, api, invariant.Config{
		Seed: seed, Ops: *invariantOps, IDs: 6, Kills: *invariantKills,
		RefreshTimeout: time.Second, OnErrorInterval: 30 * time.Second,
	})
	if t.Failed() {
		return
	}
	t.Logf("replay with: go test ./internal/cluster -run TestInvariantsAcrossReplicas -args -invariant.seed=%d", seed)
}
