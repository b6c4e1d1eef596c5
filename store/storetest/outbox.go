package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var outboxTests = []struct {
	name string
	fn   testFunc
}{
	{"EventsQueuedWithWrites", testEventsQueuedWithWrites},
	{"FailedWritesQueueNothing", testFailedWritesQueueNothing},
	{"ClaimAckRetry", testClaimAckRetry},
	{"FanOut", testFanOut},
	{"NewEndpointGetsNoHistory", testNewEndpointGetsNoHistory},
	{"ConcurrentClaimers", testConcurrentOutboxClaimers},
	{"ConnectionEventsAndPrune", testConnectionEventsAndPrune},
}

func outboxEvent(typ, id string, at time.Time) store.Event {
	return store.Event{Type: typ, ConnectionID: id, Provider: "acme", At: at}
}

func mustClaim(t *testing.T, o store.Outbox, owner string, endpoints []string, now time.Time, limit int) []store.Delivery {
	t.Helper()
	got, err := o.ClaimDeliveries(t.Context(), owner, endpoints, now, limit, time.Minute)
	if err != nil {
		t.Fatalf("ClaimDeliveries(%s): %v", owner, err)
	}
	return got
}

func outboxTypes(events []store.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Type)
	}
	return out
}

func mustConnectionEvents(t *testing.T, o store.Outbox, id string) []store.Event {
	t.Helper()
	got, err := o.ConnectionEvents(t.Context(), id, 0)
	if err != nil {
		t.Fatalf("ConnectionEvents(%q): %v", id, err)
	}
	return got
}

// testEventsQueuedWithWrites: each kind of write queues the events it
// carries, with ids assigned when empty and kept when given.
func testEventsQueuedWithWrites(t *testing.T, s store.Backend, clk *Clock) {
	o := s
	ctx := t.Context()
	c := minimalConnection("conn-ev")
	created := outboxEvent("connection.created", c.ID, time.Time{}) // At set by the store
	c = mustCreate(t, s, c, []store.Event{created}...)

	clk.Advance(time.Second)
	c.Status = store.StatusNeedsReauth
	failed := outboxEvent("connection.reauth_required", c.ID, clk.Now())
	failed.Code = "invalid_grant"
	c, err := s.CompareAndSwap(ctx, c, []store.Event{failed}...)
	if err != nil {
		t.Fatalf("CompareAndSwap: %v", err)
	}

	clk.Advance(time.Second)
	recovered := outboxEvent("connection.recovered", c.ID, clk.Now())
	recovered.ID = "evt_given_by_caller"
	if _, err := s.UpdateConnection(ctx, c.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		old.Status = store.StatusActive
		return old, []store.Event{recovered}, nil
	}); err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}

	clk.Advance(time.Second)
	if err := s.DeleteConnection(ctx, c.ID, outboxEvent("connection.deleted", c.ID, clk.Now())); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}

	got := mustConnectionEvents(t, o, c.ID)
	want := []string{"connection.deleted", "connection.recovered", "connection.reauth_required", "connection.created"}
	if fmt.Sprint(outboxTypes(got)) != fmt.Sprint(want) {
		t.Fatalf("ConnectionEvents after a deleted connection's life = %v, want %v (newest first)", outboxTypes(got), want)
	}
	ids := map[string]bool{}
	for _, e := range got {
		if e.ID == "" || ids[e.ID] {
			t.Errorf("event %s has an empty or repeated id %q", e.Type, e.ID)
		}
		ids[e.ID] = true
		if e.ConnectionID != c.ID || e.Provider != "acme" {
			t.Errorf("event %s: connection %q provider %q, want %q acme", e.Type, e.ConnectionID, e.Provider, c.ID)
		}
	}
	// Store-assigned ids sort by the events' times.
	if !(got[3].ID < got[2].ID && got[2].ID < got[0].ID) {
		t.Errorf("assigned event ids do not sort by time: %q, %q, %q", got[3].ID, got[2].ID, got[0].ID)
	}
	if got[1].ID != recovered.ID {
		t.Errorf("an event id given by the caller was replaced: got %q", got[1].ID)
	}
	if got[2].Code != "invalid_grant" || !sameTime(got[2].At, failed.At) {
		t.Errorf("reauth_required event: code %q at %v, want invalid_grant at %v", got[2].Code, got[2].At, failed.At)
	}
	if !sameTime(got[3].At, start) {
		t.Errorf("an event queued without At got %v, want the store's now %v", got[3].At, start)
	}

	// The same four reach a dispatcher, with the fields a webhook needs.
	ds := mustClaim(t, o, "owner-a", []string{"hook"}, clk.Now(), 10)
	if len(ds) != 4 {
		t.Fatalf("claimed %d deliveries, want 4", len(ds))
	}
	for _, d := range ds {
		if !ids[d.Event.ID] || d.Endpoint != "hook" || d.Attempt != 1 || d.Event.ConnectionID != c.ID || d.Event.Type == "" {
			t.Errorf("delivery %+v does not match a queued event on its first attempt", d)
		}
	}
}

// testFailedWritesQueueNothing: a write that does not happen queues none of
// its events.
func testFailedWritesQueueNothing(t *testing.T, s store.Backend, clk *Clock) {
	o := s
	ctx := t.Context()
	c := mustCreate(t, s, minimalConnection("conn-fail"))

	stale := c
	stale.Version = c.Version + 7
	if _, err := s.CompareAndSwap(ctx, stale, []store.Event{outboxEvent("connection.refresh_failed", c.ID, clk.Now())}...); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CompareAndSwap at a stale version: %v, want ErrConflict", err)
	}
	abort := errors.New("changed my mind")
	if _, err := s.UpdateConnection(ctx, c.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		return old, []store.Event{outboxEvent("connection.refresh_failed", c.ID, clk.Now())}, abort
	}); !errors.Is(err, abort) {
		t.Fatalf("UpdateConnection with a failing update: %v, want its error", err)
	}
	dup := minimalConnection(c.ID)
	if _, err := s.CreateConnection(ctx, dup, []store.Event{outboxEvent("connection.created", c.ID, clk.Now())}...); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateConnection of a taken id: %v, want ErrAlreadyExists", err)
	}
	if err := s.DeleteConnection(ctx, "conn-missing", outboxEvent("connection.deleted", "conn-missing", clk.Now())); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteConnection of a missing id: %v, want ErrNotFound", err)
	}
	gone := minimalConnection("conn-gone")
	gone.Version = 1
	if _, err := s.CompareAndSwap(ctx, gone, []store.Event{outboxEvent("connection.recovered", gone.ID, clk.Now())}...); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CompareAndSwap of a missing id: %v, want ErrNotFound", err)
	}

	for _, id := range []string{c.ID, "conn-missing", "conn-gone"} {
		if got := mustConnectionEvents(t, o, id); len(got) != 0 {
			t.Errorf("failed writes on %q queued events %v", id, outboxTypes(got))
		}
	}
	if ds := mustClaim(t, o, "owner-a", []string{"hook"}, clk.Now(), 10); len(ds) != 0 {
		t.Errorf("failed writes produced %d deliveries", len(ds))
	}
	if n, err := o.OutboxBacklog(ctx); err != nil || n != 0 {
		t.Errorf("OutboxBacklog = %d, %v; want 0", n, err)
	}
	// The connection itself is unchanged and can still be written.
	if got := mustGet(t, s, c.ID); got.Version != c.Version {
		t.Errorf("failed writes moved the version from %d to %d", c.Version, got.Version)
	}
}

// testClaimAckRetry: a claim hides a delivery until it lapses, acks and
// abandons end it, a retry makes it due at the given time, and only the
// current claimer may retry or abandon.
func testClaimAckRetry(t *testing.T, s store.Backend, clk *Clock) {
	o := s
	ctx := t.Context()
	c := minimalConnection("conn-claim")
	mustCreate(t, s, c, []store.Event{outboxEvent("connection.created", c.ID, clk.Now())}...)
	hooks := []string{"hook"}

	first := mustClaim(t, o, "owner-a", hooks, clk.Now(), 10)
	if len(first) != 1 || first[0].Attempt != 1 {
		t.Fatalf("first claim = %+v, want one delivery on attempt 1", first)
	}
	id := first[0].Event.ID
	if n, _ := o.OutboxBacklog(ctx); n != 1 {
		t.Errorf("backlog with one claimed delivery = %d, want 1", n)
	}
	if again := mustClaim(t, o, "owner-b", hooks, clk.Now().Add(59*time.Second), 10); len(again) != 0 {
		t.Fatalf("a delivery under a live claim was claimed again: %+v", again)
	}
	// owner-a died: its claim lapses and owner-b takes the delivery over.
	clk.Advance(61 * time.Second)
	second := mustClaim(t, o, "owner-b", hooks, clk.Now(), 10)
	if len(second) != 1 || second[0].Event.ID != id || second[0].Attempt != 2 {
		t.Fatalf("claim after the lease lapsed = %+v, want %s on attempt 2", second, id)
	}
	if err := o.RetryDelivery(ctx, id, "hook", "owner-a", clk.Now(), "late"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RetryDelivery by the owner of a lapsed claim: %v, want ErrConflict", err)
	}
	if err := o.AbandonDelivery(ctx, id, "hook", "owner-a", "late"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("AbandonDelivery by the owner of a lapsed claim: %v, want ErrConflict", err)
	}
	next := clk.Now().Add(5 * time.Minute)
	if err := o.RetryDelivery(ctx, id, "hook", "owner-b", next, "http 503"); err != nil {
		t.Fatalf("RetryDelivery by the claimer: %v", err)
	}
	if early := mustClaim(t, o, "owner-a", hooks, next.Add(-time.Millisecond), 10); len(early) != 0 {
		t.Fatalf("a delivery retried for later was claimed before then: %+v", early)
	}
	third := mustClaim(t, o, "owner-a", hooks, next, 10)
	if len(third) != 1 || third[0].Attempt != 3 {
		t.Fatalf("claim at the retry time = %+v, want one delivery on attempt 3", third)
	}
	if err := o.AckDelivery(ctx, id, "hook"); err != nil {
		t.Fatalf("AckDelivery: %v", err)
	}
	if err := o.AckDelivery(ctx, id, "hook"); err != nil {
		t.Errorf("a second AckDelivery: %v, want a no-op", err)
	}
	if err := o.RetryDelivery(ctx, id, "hook", "owner-a", next, "x"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RetryDelivery of a delivered delivery: %v, want ErrConflict", err)
	}
	if later := mustClaim(t, o, "owner-a", hooks, next.Add(time.Hour), 10); len(later) != 0 {
		t.Fatalf("a delivered delivery was claimed again: %+v", later)
	}
	if n, _ := o.OutboxBacklog(ctx); n != 0 {
		t.Errorf("backlog after the ack = %d, want 0", n)
	}

	// Abandoning ends a delivery too.
	if _, err := s.UpdateConnection(ctx, c.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		return old, []store.Event{outboxEvent("connection.refresh_failed", c.ID, clk.Now())}, nil
	}); err != nil {
		t.Fatal(err)
	}
	ds := mustClaim(t, o, "owner-a", hooks, next.Add(time.Hour), 10)
	if len(ds) != 1 {
		t.Fatalf("claimed %d deliveries of the new event, want 1", len(ds))
	}
	if err := o.AbandonDelivery(ctx, ds[0].Event.ID, "hook", "owner-a", "http 410"); err != nil {
		t.Fatalf("AbandonDelivery: %v", err)
	}
	if later := mustClaim(t, o, "owner-a", hooks, next.Add(48*time.Hour), 10); len(later) != 0 {
		t.Fatalf("an abandoned delivery was claimed again: %+v", later)
	}
	if n, _ := o.OutboxBacklog(ctx); n != 0 {
		t.Errorf("backlog after abandoning = %d, want 0", n)
	}

	for name, err := range map[string]error{
		"AckDelivery":     o.AckDelivery(ctx, "evt_missing", "hook"),
		"RetryDelivery":   o.RetryDelivery(ctx, "evt_missing", "hook", "owner-a", next, "x"),
		"AbandonDelivery": o.AbandonDelivery(ctx, id, "other-hook", "owner-a", "x"),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a missing delivery: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := o.ClaimDeliveries(ctx, "", hooks, next, 10, time.Minute); err == nil {
		t.Error("ClaimDeliveries with no owner succeeded")
	}
	if _, err := o.ClaimDeliveries(ctx, "owner-a", hooks, next, 0, time.Minute); err == nil {
		t.Error("ClaimDeliveries with limit 0 succeeded")
	}
}

// testFanOut: an event becomes one delivery per endpoint named when it is
// first claimed; a claim names the endpoints it takes deliveries for; an
// endpoint named only later does not get events fanned out before.
func testFanOut(t *testing.T, s store.Backend, clk *Clock) {
	o := s
	ctx := t.Context()
	c := minimalConnection("conn-fan")
	mustCreate(t, s, c, []store.Event{outboxEvent("connection.created", c.ID, clk.Now())}...)

	onlyA := mustClaim(t, o, "owner-a", []string{"a", "b"}, clk.Now(), 1)
	if len(onlyA) != 1 {
		t.Fatalf("claim with limit 1 took %d deliveries", len(onlyA))
	}
	if n, _ := o.OutboxBacklog(ctx); n != 2 {
		t.Errorf("backlog after fanning out to two endpoints = %d, want 2", n)
	}
	other := "a"
	if onlyA[0].Endpoint == "a" {
		other = "b"
	}
	if ds := mustClaim(t, o, "owner-b", []string{onlyA[0].Endpoint, "c"}, clk.Now(), 10); len(ds) != 0 {
		t.Errorf("claim for a claimed endpoint and a new one took %+v", ds)
	}
	ds := mustClaim(t, o, "owner-b", []string{other}, clk.Now(), 10)
	if len(ds) != 1 || ds[0].Endpoint != other || ds[0].Event.ID != onlyA[0].Event.ID {
		t.Errorf("claim for endpoint %s = %+v, want the same event", other, ds)
	}
	if ds, err := o.ClaimDeliveries(ctx, "owner-b", nil, clk.Now(), 10, time.Minute); err != nil || len(ds) != 0 {
		t.Errorf("claim for no endpoints = %+v, %v; want nothing", ds, err)
	}
}

// testConcurrentOutboxClaimers: claimers racing over the same outbox never
// get the same delivery while its claim lives, and between them get all of
// them.
func testConcurrentOutboxClaimers(t *testing.T, s store.Backend, clk *Clock) {
	OutboxClaimRace(t, clk.Now(), s)
}

// OutboxClaimRace queues events through the first store and has claimers
// spread over all the stores (say, one per replica on the same database)
// race to claim them: no delivery may be claimed twice while its claim
// lives, and between them they must claim every one. The stores must start
// with an empty outbox.
func OutboxClaimRace(t *testing.T, now time.Time, stores ...store.Backend) {
	t.Helper()
	const events = 60
	for i := range events {
		c := minimalConnection(fmt.Sprintf("conn-%02d", i))
		mustCreate(t, stores[0], c, []store.Event{outboxEvent("connection.created", c.ID, now)}...)
	}
	var (
		mu     sync.Mutex
		seen   = map[string]string{} // delivery -> owner
		dups   []string
		failed error
		wg     sync.WaitGroup
	)
	begin := make(chan struct{})
	for w := range 6 {
		owner := fmt.Sprintf("claimer-%d", w)
		o := stores[w%len(stores)]
		wg.Go(func() {
			<-begin
			for {
				ds, err := o.ClaimDeliveries(t.Context(), owner, []string{"a", "b"}, now, 3, time.Hour)
				mu.Lock()
				if err != nil && failed == nil {
					failed = err
				}
				for _, d := range ds {
					key := d.Event.ID + "/" + d.Endpoint
					if prev, ok := seen[key]; ok {
						dups = append(dups, key+" by "+prev+" and "+owner)
					}
					seen[key] = owner
				}
				mu.Unlock()
				if err != nil || len(ds) == 0 {
					return
				}
			}
		})
	}
	close(begin)
	wg.Wait()
	if failed != nil {
		t.Fatalf("a claimer failed: %v", failed)
	}
	if len(dups) > 0 {
		t.Fatalf("%d deliveries were claimed twice under live claims, e.g. %s", len(dups), dups[0])
	}
	if len(seen) != 2*events {
		t.Fatalf("claimers took %d deliveries between them, want %d", len(seen), 2*events)
	}
}

// testConnectionEventsAndPrune: history is per connection, newest first and
// limited; pruning deletes old events with their deliveries.
func testConnectionEventsAndPrune(t *testing.T, s store.Backend, clk *Clock) {
	o := s
	ctx := t.Context()
	c := minimalConnection("conn-hist")
	c = mustCreate(t, s, c, []store.Event{outboxEvent("connection.created", c.ID, clk.Now())}...)
	other := minimalConnection("conn-other")
	mustCreate(t, s, other, []store.Event{outboxEvent("connection.created", other.ID, clk.Now())}...)
	// The endpoint was configured all along: it gets every event.
	mustClaim(t, o, "owner-a", []string{"hook"}, clk.Now(), 100)
	for i := range 5 {
		clk.Advance(24 * time.Hour)
		var err error
		c, err = s.UpdateConnection(ctx, c.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
			e := outboxEvent("connection.refresh_failed", c.ID, clk.Now())
			e.Code = fmt.Sprintf("http_50%d", i)
			return old, []store.Event{e}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := o.ConnectionEvents(ctx, c.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Code != "http_504" || got[1].Code != "http_503" {
		t.Fatalf("ConnectionEvents(limit 2) = %+v, want the two newest", got)
	}
	if _, err := o.ConnectionEvents(ctx, c.ID, -1); err == nil {
		t.Error("ConnectionEvents with a negative limit succeeded")
	}
	// Fan out so that pruning has deliveries to take along.
	mustClaim(t, o, "owner-a", []string{"hook"}, clk.Now(), 100)
	n, err := o.PruneOutbox(ctx, start.Add(3*24*time.Hour))
	if err != nil {
		t.Fatalf("PruneOutbox: %v", err)
	}
	// Both created events and the failures of days 1 and 2 are older.
	if n != 4 {
		t.Errorf("PruneOutbox deleted %d events, want 4", n)
	}
	if got := mustConnectionEvents(t, o, c.ID); len(got) != 3 {
		t.Errorf("after pruning %d events of the connection remain, want 3", len(got))
	}
	if got := mustConnectionEvents(t, o, other.ID); len(got) != 0 {
		t.Errorf("after pruning the other connection still has %d events", len(got))
	}
	if n, _ := o.OutboxBacklog(ctx); n != 3 {
		t.Errorf("backlog after pruning = %d, want the 3 deliveries of the remaining events", n)
	}
}

// testNewEndpointGetsNoHistory: events that wait in the outbox because no
// endpoint was configured are not sent to the first endpoint added later,
// nor is an endpoint added beside another sent what came before it; both
// get what happens from then on (less EndpointStartSlack).
func testNewEndpointGetsNoHistory(t *testing.T, s store.Backend, clk *Clock) {
	old := minimalConnection("conn-old")
	mustCreate(t, s, old, outboxEvent("connection.created", old.ID, clk.Now()))
	clk.Advance(time.Hour)
	if got := mustClaim(t, s, "owner", []string{"first"}, clk.Now(), 100); len(got) != 0 {
		t.Fatalf("a new endpoint got %d events from before it was added", len(got))
	}
	recent := minimalConnection("conn-recent")
	mustCreate(t, s, recent, outboxEvent("connection.created", recent.ID, clk.Now().Add(-30*time.Second)))
	clk.Advance(time.Second)
	got := mustClaim(t, s, "owner", []string{"first"}, clk.Now(), 100)
	if len(got) != 1 || got[0].Event.ConnectionID != recent.ID {
		t.Fatalf("claimed %d deliveries, want the one event written while it was being added", len(got))
	}
	if err := s.AckDelivery(t.Context(), got[0].Event.ID, "first"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	later := minimalConnection("conn-later")
	mustCreate(t, s, later, outboxEvent("connection.created", later.ID, clk.Now()))
	clk.Advance(time.Second)
	got = mustClaim(t, s, "owner", []string{"first", "second"}, clk.Now(), 100)
	endpoints := map[string]bool{}
	for _, d := range got {
		if d.Event.ConnectionID != later.ID {
			t.Errorf("delivery of %s to %s: an event from before", d.Event.ConnectionID, d.Endpoint)
		}
		endpoints[d.Endpoint] = true
	}
	if !endpoints["first"] || !endpoints["second"] {
		t.Fatalf("new events went to %v, want both endpoints", endpoints)
	}
}
