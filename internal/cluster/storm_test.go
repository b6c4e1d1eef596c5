package cluster

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// TestRefreshStorm: three replicas, and for each of many freshly imported
// expired connections, hundreds of callers asking all three for a token at
// once. Exactly one refresh reaches the provider per connection, every
// caller gets that one token, and the rotated refresh token is the one
// saved: the provider, which revokes the whole grant on any reuse, never
// sees a replay.
func TestRefreshStorm(t *testing.T) {
	const (
		replicas   = 3
		iterations = 20
		callers    = 300
	)
	authz := authztest.New(t, authztest.Options{}) // strict rotation, reuse revokes the grant
	c := newCluster(t, authz, clusterOptions{replicas: replicas})

	var waits []time.Duration
	stalePolls := 0 // most answers with the previous token after a forced refresh elsewhere
	var secrets []string
	for it := range iterations {
		id := fmt.Sprintf("storm-%02d", it)
		access, refresh, _ := authz.IssueTokens(t, "offline")
		secrets = append(secrets, access, refresh)
		// Counted from before the import: whoever refreshes the new
		// connection (these callers, or a replica's own initiative), it is
		// refreshed once.
		before := authz.RefreshCalls()
		v0 := c.importExpired(c.replicas[it%replicas], id, access, refresh)

		type result struct {
			status int
			code   string
			token  string
			err    error
			wait   time.Duration
		}
		results := make([]result, callers)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				r := c.replicas[i%replicas]
				<-gate
				start := time.Now()
				a, err := c.send(t.Context(), r, http.MethodGet, "/v1/connections/"+id+"/token", nil)
				results[i] = result{status: a.status, code: a.errorCode(), token: a.accessToken(), err: err, wait: time.Since(start)}
			})
		}
		close(gate)
		wg.Wait()

		if got := authz.RefreshCalls() - before; got != 1 {
			t.Errorf("%s: %d refresh requests reached the provider, want exactly 1", id, got)
		}
		if n := authz.ReuseDetected(); n != 0 {
			t.Errorf("%s: the provider detected %d refresh-token reuses", id, n)
		}
		token := ""
		var failed, differ int
		for i, r := range results {
			waits = append(waits, r.wait)
			switch {
			case r.err != nil:
				failed++
				if failed <= 3 {
					t.Errorf("%s: caller %d (%s): %v", id, i, c.replicas[i%replicas].name, r.err)
				}
			case r.status != http.StatusOK || r.token == "":
				failed++
				if failed <= 3 {
					t.Errorf("%s: caller %d (%s): %d %q, want 200 with a token", id, i, c.replicas[i%replicas].name, r.status, r.code)
				}
			case token == "":
				token = r.token
			case r.token != token:
				differ++
			}
		}
		if failed > 0 {
			t.Errorf("%s: %d of %d callers did not get a token", id, failed, callers)
		}
		if differ > 0 {
			t.Errorf("%s: %d callers got a different access token than the others", id, differ)
		}
		if token == access {
			t.Errorf("%s: the callers got the expired token back, not a refreshed one", id)
		}
		if token != "" && !authz.Active(t, token) {
			t.Errorf("%s: the token handed out is not active at the provider", id)
		}
		secrets = append(secrets, token)

		v := c.connection(c.replicas[(it+1)%replicas], id)
		if v.Status != "active" || v.Failure != nil {
			t.Errorf("%s: status %q, failure %+v; want active with no failure", id, v.Status, v.Failure)
		}
		// One refresh in all, which writes twice: the mark that it started
		// (the provider rotates strictly) and its answer. A second writer
		// would have bumped the version again.
		if v.Version != v0+2 {
			t.Errorf("%s: version %d after the storm, want %d (import + one refresh's mark and answer)", id, v.Version, v0+2)
		}
		// Every caller has its answer, so the winner's flight, which
		// releases the lease before it returns, is over.
		if row := c.row(id); row.leaseOwner != nil {
			t.Errorf("%s: the refresh lease is still held after the storm", id)
		}

		// A forced refresh on another replica works only if the refresh
		// token saved is the one the provider rotated to: a replay of the
		// imported one would be reuse, and the grant would be revoked.
		a := c.call(c.replicas[(it+2)%replicas], http.MethodPost, "/v1/connections/"+id+"/refresh", nil)
		if a.status != http.StatusOK {
			t.Errorf("%s: forced refresh: %d %q, want 200", id, a.status, a.errorCode())
		}
		if got := authz.RefreshCalls() - before; got != 2 {
			t.Errorf("%s: %d refresh requests after the forced refresh, want 2", id, got)
		}
		forcer := c.replicas[(it+2)%replicas]
		after := c.call(forcer, http.MethodGet, "/v1/connections/"+id+"/token", nil)
		fresh := after.accessToken()
		if after.status != http.StatusOK || fresh == "" || fresh == token {
			t.Errorf("%s: on the replica that forced the refresh: %d, new token %v; want 200 with a new token",
				id, after.status, fresh != token)
		} else if !authz.Active(t, fresh) {
			t.Errorf("%s: the token after the forced refresh is not active at the provider", id)
		}
		secrets = append(secrets, fresh)
		// The other replicas may have cached the previous token; the
		// database's change feed tells them to drop it. They must converge
		// on the new token, soon: bounded polling, no wall-clock claim.
		for _, r := range c.replicas {
			if r == forcer || fresh == "" || fresh == token {
				continue
			}
			var polls int
			converged := poll(500, 10*time.Millisecond, func() bool {
				polls++
				a := c.call(r, http.MethodGet, "/v1/connections/"+id+"/token", nil)
				return a.status == http.StatusOK && a.accessToken() == fresh
			})
			if !converged {
				t.Errorf("%s: %s never handed out the token another replica's forced refresh saved", id, r.name)
			}
			stalePolls = max(stalePolls, polls-1)
		}
		if authz.ReuseDetected() != 0 {
			t.Errorf("%s: the forced refresh was taken as refresh-token reuse", id)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	c.assertNoSecretsLogged(secrets...)

	slices.Sort(waits)
	t.Logf("%d callers over %d connections on %d replicas: wait p50 %v, p99 %v, max %v",
		len(waits), iterations, replicas, percentile(waits, 50), percentile(waits, 99), waits[len(waits)-1])
	t.Logf("after a forced refresh on one replica, another served the previous token for at most %d polls", stalePolls)
}
