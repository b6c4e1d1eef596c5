package scheduler_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/pgtest"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// TestReplicasOnPostgresShareWithoutOverlap: two replicas, each with its
// own store pool, broker and scheduler, run their cycles at the same
// moments against one PostgreSQL database. Every due connection is
// refreshed exactly once — never by both in one cycle, which at this
// rotating provider would replay a spent refresh token — and both replicas
// take part.
func TestReplicasOnPostgresShareWithoutOverlap(t *testing.T) {
	dsn := pgtest.FreshDatabase(t)
	ctx := t.Context()
	ring, _, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	fp := newFakeProvider(time.Hour)
	srv := httptest.NewServer(fp)
	t.Cleanup(srv.Close)

	type replica struct {
		broker *broker.Broker
		sched  *scheduler.Scheduler
	}
	var replicas []replica
	for _, name := range []string{"replica-a", "replica-b"} {
		st, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		ep, err := oauth.NewEndpoint(oauth.Config{
			ClientID: "fake-client", ClientSecret: "fake-secret", TokenURL: srv.URL + "/token",
			AuthStyle: oauth.AuthStyleHeader, HTTPClient: srv.Client(),
		})
		if err != nil {
			t.Fatal(err)
		}
		b, err := broker.New(broker.Options{
			Store: st, Sealer: ring, Owner: name,
			Providers: map[string]broker.Provider{"acme": {Endpoint: ep, Policy: lifecycle.Policy{Window: 5 * time.Minute}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err := scheduler.New(scheduler.Options{Store: st, Refresher: b, Owner: name, BatchSize: 25, Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, replica{b, s})
	}

	const n = 300
	now := time.Now()
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		// An hour-long token inside its refresh window already: due at once.
		access, refresh := fp.grant(id, now.Add(4*time.Minute))
		if _, err := replicas[0].broker.CreateConnection(ctx, broker.Import{
			ID: id, Provider: "acme", AccessToken: access, RefreshToken: refresh,
			IssuedAt: now.Add(-56 * time.Minute), ExpiresAt: now.Add(4 * time.Minute),
		}); err != nil {
			t.Fatal(err)
		}
	}

	claimed := make([]int, len(replicas))
	for cycle := 0; ; cycle++ {
		if cycle > 50 {
			t.Fatal("the backlog never drained")
		}
		stats := make([]scheduler.CycleStats, len(replicas))
		var wg sync.WaitGroup
		for i, r := range replicas {
			wg.Go(func() {
				var err error
				if stats[i], err = r.sched.RunOnce(context.WithoutCancel(ctx)); err != nil {
					t.Errorf("%s cycle %d: %v", r.sched.Owner(), cycle, err)
				}
			})
		}
		wg.Wait()
		for i := range replicas {
			claimed[i] += stats[i].Claimed
		}
		for i := range n {
			id := fmt.Sprintf("c%03d", i)
			if c := fp.conn(id); c.calls > 1 {
				t.Fatalf("cycle %d: %s was sent to the provider %d times", cycle, id, c.calls)
			}
		}
		if stats[0].Claimed == 0 && stats[1].Claimed == 0 {
			break
		}
	}
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		if c := fp.conn(id); c.refreshed != 1 {
			t.Errorf("%s refreshed %d times, want once", id, c.refreshed)
		}
	}
	if fp.reused > 0 {
		t.Errorf("%d spent refresh tokens replayed", fp.reused)
	}
	if claimed[0] == 0 || claimed[1] == 0 || claimed[0]+claimed[1] != n {
		t.Errorf("replicas claimed %v of %d due connections; want both to share all of them, each once", claimed, n)
	}
}
