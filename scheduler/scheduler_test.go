package scheduler_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/store"
)

// TestManyConnectionsRefreshedBeforeExpiry: connections whose tokens expire
// spread across an hour are all refreshed before they expire, through a
// provider limited to 20 token requests a second, which never sees more
// than its burst plus 20 in any second.
func TestManyConnectionsRefreshedBeforeExpiry(t *testing.T) {
	n, interval := 10000, time.Second
	if testing.Short() || raceEnabled {
		// The race detector makes each refresh and each idle cycle about
		// ten times slower; the property is the same at a smaller scale.
		n, interval = 1000, 5*time.Second
	}
	synctest.Test(t, func(t *testing.T) {
		const rate, burst = 20, 5
		r := newRig(t, rigOptions{expiresIn: time.Hour, limit: scheduler.Limit{Rate: rate, Burst: burst}, sched: every(interval)})
		start := time.Now()
		expiry := make([]time.Time, n)
		for i := range n {
			// From 10 minutes out to 70: one hour of expiries.
			expiry[i] = start.Add(10*time.Minute + time.Duration(i)*time.Hour/time.Duration(n))
			r.add(fmt.Sprintf("c%05d", i), expiry[i])
		}
		r.run(70 * time.Minute)

		for i := range n {
			id := fmt.Sprintf("c%05d", i)
			if c := r.provider.conn(id); c.refreshed == 0 {
				t.Fatalf("%s (expiring %v after start) was never refreshed", id, expiry[i].Sub(start))
			}
			if c := r.get(id); !c.ExpiresAt.After(expiry[i]) || c.Status != store.StatusActive || c.Failure != nil {
				t.Fatalf("%s: status %s, failure %v, expiry not renewed (%v)", id, c.Status, c.Failure, !c.ExpiresAt.After(expiry[i]))
			}
		}
		if len(r.provider.late) > 0 {
			t.Errorf("%d refreshes came after the token had expired (first: %s)", len(r.provider.late), r.provider.late[0])
		}
		if r.provider.reused > 0 {
			t.Errorf("%d refreshes replayed a spent refresh token", r.provider.reused)
		}
		if m := r.provider.maxPerSecond(); m > rate+burst {
			t.Errorf("the provider saw %d requests in one second, limit %d/s with burst %d", m, rate, burst)
		}
		t.Logf("%d connections: %d token requests, at most %d in one second", n, r.provider.calls, r.provider.maxPerSecond())
	})
}

// TestProviderOutageRiddenOut: a token endpoint that answers 503 for half an
// hour costs each connection a handful of calls, spaced by the broker's
// backoff, and every connection is healthy again afterwards.
func TestProviderOutageRiddenOut(t *testing.T) {
	n := 200
	if raceEnabled {
		n = 100
	}
	synctest.Test(t, func(t *testing.T) {
		// Cycles every 5s rather than every second: hours of simulated time
		// cost fewer idle queries, and the backoff is minutes long anyway.
		r := newRig(t, rigOptions{expiresIn: time.Hour, sched: every(5 * time.Second)})
		start := time.Now()
		r.provider.outageFrom, r.provider.outageUntil = start.Add(5*time.Minute), start.Add(35*time.Minute)
		for i := range n {
			// Expiring from 6 to 36 minutes out: all due during the outage.
			r.add(fmt.Sprintf("c%03d", i), start.Add(6*time.Minute+time.Duration(i)*30*time.Minute/time.Duration(n)))
		}
		r.run(3 * time.Hour)

		failedSome := 0
		for i := range n {
			id := fmt.Sprintf("c%03d", i)
			c := r.get(id)
			if c.Status != store.StatusActive || c.Failure != nil {
				t.Fatalf("%s after the outage: status %s, failure %+v; want active and healthy", id, c.Status, c.Failure)
			}
			pc := r.provider.conn(id)
			if pc.refreshed == 0 {
				t.Fatalf("%s was never refreshed after the outage", id)
			}
			// The broker's backoff (full jitter from 30s, doubling) spaces
			// attempts so that 30 minutes take about 8 of them, and the
			// endpoint tries each one 3 times. The bound leaves room for
			// unlucky jitter; the total below is the tighter one.
			failed := pc.calls - pc.refreshed
			if failed > 15*oauth.DefaultMaxAttempts {
				t.Errorf("%s: %d failed calls during a 30 minute outage", id, failed)
			}
			if failed > 0 {
				failedSome++
			}
		}
		if failedSome < n/2 {
			t.Fatalf("only %d of %d connections met the outage; the test did not test it", failedSome, n)
		}
		if r.provider.reused > 0 {
			t.Errorf("%d refreshes replayed a spent refresh token", r.provider.reused)
		}
		if max := n * 10 * oauth.DefaultMaxAttempts; r.provider.calls > max {
			t.Errorf("%d token requests for %d connections in 3 hours with a 30 minute outage, want at most %d", r.provider.calls, n, max)
		}
		t.Logf("%d connections through a 30 minute outage: %d token requests", n, r.provider.calls)
	})
}

// TestInvalidGrantCalledOnce: a connection whose grant the provider revoked
// is called once, marked needs_reauth, and never claimed again; its
// neighbours carry on.
func TestInvalidGrantCalledOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, rigOptions{expiresIn: time.Hour, sched: every(5 * time.Second)})
		start := time.Now()
		r.add("dead", start.Add(10*time.Minute))
		r.add("alive", start.Add(10*time.Minute))
		r.provider.dead["dead"] = true
		r.run(4 * time.Hour)

		if calls := r.provider.conn("dead").calls; calls != 1 {
			t.Fatalf("the revoked connection was called %d times, want exactly 1", calls)
		}
		dead := r.get("dead")
		if dead.Status != store.StatusNeedsReauth || dead.Failure == nil || dead.Failure.Code != "invalid_grant" {
			t.Fatalf("revoked connection: status %s, failure %+v; want needs_reauth with invalid_grant", dead.Status, dead.Failure)
		}
		if !dead.NextRefreshAt.IsZero() {
			t.Errorf("a needs_reauth connection is still scheduled at %v", dead.NextRefreshAt)
		}
		if got, err := r.store.ClaimDue(t.Context(), "probe", time.Now().Add(24*time.Hour), 10, time.Minute); err != nil || len(got) != 1 || got[0].ID != "alive" {
			t.Fatalf("ClaimDue a day later = %v, %v; want only the live connection", got, err)
		}
		// Refreshed at about 55, 110, 165 and 220 minutes.
		if alive := r.provider.conn("alive"); alive.refreshed < 4 {
			t.Fatalf("the live connection was refreshed %d times in 4 hours of one-hour tokens", alive.refreshed)
		}
	})
}

func every(d time.Duration) func(*scheduler.Options) {
	return func(o *scheduler.Options) { o.Interval = d }
}

// TestShortRefreshWindow: with a refresh window shorter than the claim,
// a connection must still be refreshed before it expires, which needs the
// broker to refresh a connection once its NextRefreshAt has come (the
// scheduler claims it then), not only once the window has opened.
func TestShortRefreshWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, rigOptions{expiresIn: time.Hour, brokerOpt: func(o *broker.Options) {
			p := o.Providers["acme"]
			p.Policy.Window = 20 * time.Second
			o.Providers["acme"] = p
		}})
		start := time.Now()
		// RefreshIfDue refreshes at NextRefreshAt, which lies up to a quarter
		// of a window before the window opens.
		r.add("probe", start.Add(time.Hour))
		time.Sleep(time.Until(r.get("probe").NextRefreshAt))
		if err := r.broker.RefreshIfDue(t.Context(), "probe"); err != nil {
			t.Fatal(err)
		}
		if r.provider.conn("probe").refreshed == 0 {
			t.Fatal("RefreshIfDue declined a connection whose NextRefreshAt had come")
		}
		start = time.Now()
		const n = 50
		for i := range n {
			r.add(fmt.Sprintf("c%02d", i), start.Add(5*time.Minute+time.Duration(i)*10*time.Minute/n))
		}
		r.run(20 * time.Minute)
		for i := range n {
			if c := r.provider.conn(fmt.Sprintf("c%02d", i)); c.refreshed == 0 {
				t.Fatalf("c%02d was never refreshed", i)
			}
		}
		if len(r.provider.late) > 0 {
			t.Errorf("%d of %d connections were refreshed only after their token expired", len(r.provider.late), n)
		}
	})
}
