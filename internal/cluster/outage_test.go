package cluster

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// TestDatabaseOutage cuts two replicas off their database for a couple of
// seconds while callers keep asking them for tokens. The shared test server
// keeps running (other packages use it): the database refuses new sessions
// and its existing ones are ended. Every answer that is not a token is a
// clean 503 with a JSON error and Retry-After, never a 500 and never a
// hang; /readyz says so; afterwards both replicas serve again, and the rows
// are as they were.
func TestDatabaseOutage(t *testing.T) {
	authz := authztest.New(t, authztest.Options{})
	c := newCluster(t, authz, clusterOptions{replicas: 2})
	db := c.databaseName()
	t.Cleanup(func() { c.adminExec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS true`) })

	validAccess, validRefresh, _ := authz.IssueTokens(t, "offline")
	c.importConnection(c.replicas[0], map[string]any{
		"id": "valid", "provider": providerName, "access_token": validAccess, "refresh_token": validRefresh, "expires_in": 3600,
	})
	expiredAccess, expiredRefresh, _ := authz.IssueTokens(t, "offline")
	c.importExpired(c.replicas[1], "expired", expiredAccess, expiredRefresh)
	ids := []string{"valid", "expired"}

	// The load: a few callers asking both replicas for both tokens until
	// told to stop. The first answers for "expired" refresh it.
	const (
		phaseBefore int32 = iota
		phaseDown
		phaseAfter
	)
	var (
		phase     atomic.Int32
		mu        sync.Mutex
		refreshed string              // the token "expired" was refreshed to
		served    = map[string]bool{} // replica/id pairs that have answered 200
		unavail   = map[int32]int{}   // clean 503s per phase
		downBy    = map[string]int{}  // clean 503s per replica while down
		ok        = map[int32]int{}   // 200s per phase
		problems  []string            // anything else, capped
		problem   = func(format string, args ...any) {
			if len(problems) < 10 {
				problems = append(problems, fmt.Sprintf(format, args...))
			}
		}
	)
	client := &http.Client{Timeout: 10 * time.Second, Transport: c.client.Transport}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for n := g; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				r, id := c.replicas[n%2], ids[(n/2)%2]
				p := phase.Load()
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, r.base+"/v1/connections/"+id+"/token", nil)
				req.Header.Set("Authorization", "Bearer "+c.key)
				resp, err := client.Do(req)
				var a answer
				if err == nil {
					a, err = readAnswer(resp)
				}
				mu.Lock()
				switch {
				case err != nil:
					problem("%s %s: %v (a hang or a dropped connection)", r.name, id, err)
				case a.status == http.StatusOK:
					tok := a.accessToken()
					switch {
					case id == "valid" && tok != validAccess:
						problem("%s valid: a different token than the one imported", r.name)
					case id == "expired" && (tok == "" || tok == expiredAccess):
						problem("%s expired: the expired token, or none, was served", r.name)
					case id == "expired" && refreshed == "":
						refreshed = tok
					case id == "expired" && tok != refreshed:
						problem("%s expired: a second refreshed token", r.name)
					}
					served[r.name+"/"+id] = true
					ok[p]++
				case a.status == http.StatusServiceUnavailable:
					if msg := cleanUnavailable(a); msg != "" {
						problem("%s %s: 503 %s", r.name, id, msg)
					}
					unavail[p]++
					if p == phaseDown {
						downBy[r.name]++
					}
				default:
					problem("%s %s: status %d %q, want 200 or 503", r.name, id, a.status, a.errorCode())
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	// Both tokens served by both replicas before the outage: the expired
	// one has had its refresh.
	if !poll(500, 10*time.Millisecond, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(served) == 4
	}) {
		t.Fatal("the replicas did not serve both tokens before the outage")
	}
	if got := authz.RefreshCalls(); got != 1 {
		t.Fatalf("%d refresh requests for the expired connection before the outage, want 1", got)
	}
	versions := map[string]int64{}
	for _, id := range ids {
		versions[id] = c.connection(c.replicas[0], id).Version
	}
	time.Sleep(300 * time.Millisecond)

	// The outage.
	down := time.Now()
	c.adminExec(`ALTER DATABASE `+db+` ALLOW_CONNECTIONS false`,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '`+db+`' AND pid <> pg_backend_pid()`)
	phase.Store(phaseDown)
	for _, r := range c.replicas {
		if !poll(100, 20*time.Millisecond, func() bool { return c.readyz(r) == http.StatusServiceUnavailable }) {
			t.Errorf("%s: /readyz never answered 503 while its database was down", r.name)
		}
	}
	time.Sleep(2*time.Second - time.Since(down))
	phase.Store(phaseAfter)
	c.adminExec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS true`)

	for _, r := range c.replicas {
		if !poll(250, 20*time.Millisecond, func() bool { return c.readyz(r) == http.StatusOK }) {
			t.Errorf("%s: /readyz did not answer 200 again after the outage", r.name)
		}
		for _, id := range ids {
			if !poll(250, 20*time.Millisecond, func() bool {
				a, err := c.send(t.Context(), r, http.MethodGet, "/v1/connections/"+id+"/token", nil)
				return err == nil && a.status == http.StatusOK
			}) {
				t.Errorf("%s: GET token %s did not answer 200 again after the outage", r.name, id)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers: before the outage %d tokens, %d 503s; during %d tokens, %d 503s; after %d tokens, %d 503s",
		ok[phaseBefore], unavail[phaseBefore], ok[phaseDown], unavail[phaseDown], ok[phaseAfter], unavail[phaseAfter])
	for _, p := range problems {
		t.Error(p)
	}
	// Each replica kept answering, with 503s, while its database was
	// down: it neither hung nor served from nowhere.
	for _, r := range c.replicas {
		if downBy[r.name] == 0 {
			t.Errorf("%s answered no 503 while the database was down", r.name)
		}
	}
	if ok[phaseAfter] == 0 {
		t.Error("the load got no token after the outage")
	}

	// Nothing was lost or redone.
	for _, r := range c.replicas {
		if a := c.call(r, http.MethodGet, "/v1/connections/valid/token", nil); a.status != http.StatusOK || a.accessToken() != validAccess {
			t.Errorf("%s: the valid connection's token changed across the outage (status %d)", r.name, a.status)
		}
		if a := c.call(r, http.MethodGet, "/v1/connections/expired/token", nil); a.status != http.StatusOK || a.accessToken() != refreshed {
			t.Errorf("%s: the refreshed connection's token changed across the outage (status %d)", r.name, a.status)
		}
	}
	for _, id := range ids {
		v := c.connection(c.replicas[1], id)
		if v.Status != "active" || v.Failure != nil || v.Version != versions[id] {
			t.Errorf("%s after the outage: status %q, failure %+v, version %d; want active, none, %d",
				id, v.Status, v.Failure, v.Version, versions[id])
		}
	}
	if got := authz.RefreshCalls(); got != 1 {
		t.Errorf("%d refresh requests in all, want 1", got)
	}
	if refreshed != "" && !authz.Active(t, refreshed) {
		t.Error("the refreshed token is not active at the provider")
	}
	c.assertNoSecretsLogged(validAccess, validRefresh, expiredAccess, expiredRefresh, refreshed)
}

// cleanUnavailable returns what is wrong with a 503 answer, or "" if it is
// the API's: a JSON error body with a code a caller can act on, and a
// Retry-After of whole seconds.
func cleanUnavailable(a answer) string {
	if ct, _, _ := mime.ParseMediaType(a.header.Get("Content-Type")); ct != "application/json" {
		return fmt.Sprintf("with Content-Type %q, want application/json", a.header.Get("Content-Type"))
	}
	if code := a.errorCode(); code != "provider_unavailable" {
		return fmt.Sprintf("with error code %q, want provider_unavailable", code)
	}
	if secs, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || secs < 1 {
		return fmt.Sprintf("with Retry-After %q, want a number of seconds", a.header.Get("Retry-After"))
	}
	return ""
}

// readyz returns the status of the replica's /readyz, 0 if it did not
// answer.
func (c *cluster) readyz(r *replica) int {
	resp, err := c.client.Get(r.base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
