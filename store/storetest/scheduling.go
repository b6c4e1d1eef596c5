package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var schedulingTests = []struct {
	name string
	fn   testFunc
}{
	{"ClaimDue", testClaimDue},
	{"ClaimDueLimitOldestFirst", testClaimDueLimit},
	{"ClaimKeepsVersionAndFollowsWrites", testClaimFollowsWrites},
	{"ClaimDueInvalid", testClaimDueInvalid},
	{"ConcurrentClaimersShareWithoutOverlap", testConcurrentClaimers},
	{"OldestDue", testOldestDue},
	{"ReleaseClaim", testReleaseClaim},
}

// dueConnection is an active connection due at next (zero: never).
func dueConnection(id string, next time.Time) store.Connection {
	c := minimalConnection(id)
	c.NextRefreshAt = next
	return c
}

func claimIDs(cs []store.Claim) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	return ids
}

func sameIDs(got []store.Claim, want ...string) bool {
	ids := claimIDs(got)
	if len(ids) != len(want) {
		return false
	}
	for i := range ids {
		if ids[i] != want[i] {
			return false
		}
	}
	return true
}

// testClaimDue: only active connections due by now are claimed, oldest
// first, with their provider and due time; a claim hides them from every
// owner until it lapses.
func testClaimDue(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	sc := s
	now := clk.Now()
	mustCreate(t, s, dueConnection("late-2m", now.Add(-2*time.Minute)))
	mustCreate(t, s, dueConnection("late-1m", now.Add(-time.Minute)))
	mustCreate(t, s, dueConnection("exactly-now", now))
	mustCreate(t, s, dueConnection("future", now.Add(time.Minute)))
	mustCreate(t, s, dueConnection("unscheduled", time.Time{}))
	reauth := dueConnection("needs-reauth", now.Add(-3*time.Minute))
	reauth.Status = store.StatusNeedsReauth
	mustCreate(t, s, reauth)

	got, err := sc.ClaimDue(ctx, "replica-1", now, 10, 30*time.Second)
	if err != nil {
		t.Fatalf("ClaimDue: %v", err)
	}
	if !sameIDs(got, "late-2m", "late-1m", "exactly-now") {
		t.Fatalf("claimed %v, want [late-2m late-1m exactly-now]", claimIDs(got))
	}
	if got[0].Provider != "acme" || !sameTime(got[0].NextRefreshAt, now.Add(-2*time.Minute)) {
		t.Errorf("claim = provider %q due %v, want acme due %v", got[0].Provider, got[0].NextRefreshAt, now.Add(-2*time.Minute))
	}

	for _, owner := range []string{"replica-1", "replica-2"} {
		again, err := sc.ClaimDue(ctx, owner, now.Add(29*time.Second), 10, 30*time.Second)
		if err != nil || len(again) != 0 {
			t.Fatalf("ClaimDue by %s during the claim = %v, %v; want nothing", owner, claimIDs(again), err)
		}
	}
	again, err := sc.ClaimDue(ctx, "replica-2", now.Add(30*time.Second), 10, 30*time.Second)
	if err != nil || !sameIDs(again, "late-2m", "late-1m", "exactly-now") {
		t.Fatalf("ClaimDue after the claim lapsed = %v, %v; want the three due again", claimIDs(again), err)
	}
}

// testClaimDueLimit: limit caps a claim and the oldest go first, so a
// backlog drains in due order.
func testClaimDueLimit(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	sc := s
	now := clk.Now()
	for i, id := range []string{"c", "a", "d", "b"} {
		mustCreate(t, s, dueConnection(id, now.Add(-time.Duration([]int{3, 1, 4, 2}[i])*time.Minute)))
	}
	var order []string
	for range 3 {
		got, err := sc.ClaimDue(ctx, "replica-1", now, 2, time.Minute)
		if err != nil {
			t.Fatalf("ClaimDue: %v", err)
		}
		if len(got) > 2 {
			t.Fatalf("claimed %d with limit 2", len(got))
		}
		order = append(order, claimIDs(got)...)
	}
	if fmt.Sprint(order) != "[d c b a]" {
		t.Fatalf("claim order %v, want [d c b a] (oldest due first)", order)
	}
}

// testClaimFollowsWrites: claiming neither bumps the version nor touches
// the lease, so a refresh that read the row before the claim still saves;
// the connection's next due time is the broker's to move.
func testClaimFollowsWrites(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	sc := s
	now := clk.Now()
	before := mustCreate(t, s, dueConnection("c1", now.Add(-time.Minute)))
	if _, err := s.AcquireLease(ctx, "c1", "broker-1", time.Minute); err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if got, err := sc.ClaimDue(ctx, "replica-1", now, 10, 30*time.Second); err != nil || !sameIDs(got, "c1") {
		t.Fatalf("ClaimDue = %v, %v; want [c1]", claimIDs(got), err)
	}
	after := mustGet(t, s, "c1")
	if after.Version != before.Version || after.LeaseOwner != "broker-1" {
		t.Fatalf("after a claim: version %d (was %d), lease owner %q; want both unchanged", after.Version, before.Version, after.LeaseOwner)
	}
	expectData(t, "after a claim", after, before)

	// The broker refreshes and reschedules an hour out.
	next := before
	next.NextRefreshAt = now.Add(time.Hour)
	saved, err := s.CompareAndSwap(ctx, next)
	if err != nil {
		t.Fatalf("CompareAndSwap on the version read before the claim: %v", err)
	}
	if !sameTime(saved.NextRefreshAt, now.Add(time.Hour)) {
		t.Errorf("NextRefreshAt = %v after CompareAndSwap, want %v", saved.NextRefreshAt, now.Add(time.Hour))
	}
	if got, err := sc.ClaimDue(ctx, "replica-1", now.Add(time.Minute), 10, 30*time.Second); err != nil || len(got) != 0 {
		t.Fatalf("ClaimDue after rescheduling = %v, %v; want nothing", claimIDs(got), err)
	}
	if got, err := sc.ClaimDue(ctx, "replica-1", now.Add(time.Hour), 10, 30*time.Second); err != nil || !sameIDs(got, "c1") {
		t.Fatalf("ClaimDue when due again = %v, %v; want [c1]", claimIDs(got), err)
	}
	// A connection that stopped being active is not claimed even when due.
	dead := mustGet(t, s, "c1")
	dead.Status = store.StatusNeedsReauth
	if _, err := s.CompareAndSwap(ctx, dead); err != nil {
		t.Fatalf("CompareAndSwap: %v", err)
	}
	if got, err := sc.ClaimDue(ctx, "replica-2", now.Add(2*time.Hour), 10, 30*time.Second); err != nil || len(got) != 0 {
		t.Fatalf("ClaimDue of a needs_reauth connection = %v, %v; want nothing", claimIDs(got), err)
	}
}

func testClaimDueInvalid(t *testing.T, s store.Backend, clk *Clock) {
	sc := s
	mustCreate(t, s, dueConnection("c1", clk.Now().Add(-time.Minute)))
	for _, tc := range []struct {
		name  string
		owner string
		limit int
		ttl   time.Duration
	}{
		{"empty owner", "", 10, time.Minute},
		{"zero limit", "r", 0, time.Minute},
		{"negative limit", "r", -1, time.Minute},
		{"zero ttl", "r", 10, 0},
		{"negative ttl", "r", 10, -time.Second},
	} {
		if got, err := sc.ClaimDue(t.Context(), tc.owner, clk.Now(), tc.limit, tc.ttl); err == nil {
			t.Errorf("%s: ClaimDue succeeded with %d claims, want an error", tc.name, len(got))
		}
	}
	// Nothing was claimed by the rejected calls.
	if got, err := sc.ClaimDue(t.Context(), "r", clk.Now(), 10, time.Minute); err != nil || !sameIDs(got, "c1") {
		t.Fatalf("ClaimDue after rejected calls = %v, %v; want [c1]", claimIDs(got), err)
	}
}

// testConcurrentClaimers: two schedulers claiming the same backlog at the
// same time split it; no id is handed to both.
func testConcurrentClaimers(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	sc := s
	now := clk.Now()
	const n = 120
	for i := range n {
		mustCreate(t, s, dueConnection(fmt.Sprintf("c%03d", i), now.Add(-time.Duration(i)*time.Second)))
	}
	var (
		mu     sync.Mutex
		seenBy = map[string]string{}
		dups   []string
		wg     sync.WaitGroup
		errs   = make(chan error, 2)
	)
	for _, owner := range []string{"replica-1", "replica-2"} {
		wg.Go(func() {
			for {
				got, err := sc.ClaimDue(ctx, owner, now, 7, time.Minute)
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, c := range got {
					if prev, ok := seenBy[c.ID]; ok {
						dups = append(dups, c.ID+" by "+prev+" and "+owner)
					}
					seenBy[c.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("ClaimDue: %v", err)
	}
	if len(dups) > 0 {
		t.Fatalf("claimed twice: %v", dups)
	}
	if len(seenBy) != n {
		t.Fatalf("%d of %d due connections claimed", len(seenBy), n)
	}
}

func testOldestDue(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	sc := s
	now := clk.Now()
	if _, ok, err := sc.OldestDue(ctx, now); err != nil || ok {
		t.Fatalf("OldestDue of an empty store = ok %v, %v; want none", ok, err)
	}
	mustCreate(t, s, dueConnection("future", now.Add(time.Minute)))
	reauth := dueConnection("needs-reauth", now.Add(-time.Hour))
	reauth.Status = store.StatusNeedsReauth
	mustCreate(t, s, reauth)
	if _, ok, err := sc.OldestDue(ctx, now); err != nil || ok {
		t.Fatalf("OldestDue with nothing active due = ok %v, %v; want none", ok, err)
	}
	mustCreate(t, s, dueConnection("late-5m", now.Add(-5*time.Minute)))
	mustCreate(t, s, dueConnection("late-1m", now.Add(-time.Minute)))
	// Claimed connections still count: they are late until refreshed.
	if _, err := sc.ClaimDue(ctx, "replica-1", now, 10, time.Minute); err != nil {
		t.Fatalf("ClaimDue: %v", err)
	}
	oldest, ok, err := sc.OldestDue(ctx, now)
	if err != nil || !ok || !sameTime(oldest, now.Add(-5*time.Minute)) {
		t.Fatalf("OldestDue = %v, ok %v, %v; want %v", oldest, ok, err, now.Add(-5*time.Minute))
	}
}

// testReleaseClaim: a released claim lets the connection be claimed again
// as soon as it is due, before the claim would have lapsed; only the owner
// can release it.
func testReleaseClaim(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	now := clk.Now()
	mustCreate(t, s, dueConnection("short", now.Add(-time.Second)))
	if got, err := s.ClaimDue(ctx, "replica-1", now, 10, time.Hour); err != nil || !sameIDs(got, "short") {
		t.Fatalf("ClaimDue = %v, %v", claimIDs(got), err)
	}
	if err := s.ReleaseClaim(ctx, "replica-2", "short"); err != nil {
		t.Fatalf("ReleaseClaim by another owner: %v", err)
	}
	if got, _ := s.ClaimDue(ctx, "replica-2", now, 10, time.Hour); len(got) != 0 {
		t.Fatalf("another owner's release ended the claim: claimed %v", claimIDs(got))
	}
	if err := s.ReleaseClaim(ctx, "replica-1", "short"); err != nil {
		t.Fatalf("ReleaseClaim: %v", err)
	}
	if got, err := s.ClaimDue(ctx, "replica-2", now, 10, time.Hour); err != nil || !sameIDs(got, "short") {
		t.Fatalf("after release, ClaimDue = %v, %v; want the connection again", claimIDs(got), err)
	}
	if err := s.ReleaseClaim(ctx, "replica-1", "missing"); err != nil {
		t.Fatalf("ReleaseClaim of a missing id: %v", err)
	}
}
