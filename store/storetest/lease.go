package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var leaseTests = []struct {
	name string
	fn   testFunc
}{
	{"AcquireFree", testLeaseAcquireFree},
	{"HeldByOther", testLeaseHeldByOther},
	{"SameOwnerExtends", testLeaseSameOwnerExtends},
	{"Expired", testLeaseExpired},
	{"Release", testLeaseRelease},
	{"Invalid", testLeaseInvalid},
	{"RefreshFlow", testLeaseRefreshFlow},
}

const ttl = 30 * time.Second

func expectLease(t *testing.T, what string, c store.Connection, owner string, until time.Time) {
	t.Helper()
	if c.LeaseOwner != owner || !sameTime(c.LeaseUntil, until) {
		t.Errorf("%s: lease = %q until %v, want %q until %v", what, c.LeaseOwner, c.LeaseUntil, owner, until)
	}
}

func testLeaseAcquireFree(t *testing.T, s store.Backend, clk *Clock) {
	orig := mustCreate(t, s, fullConnection("conn-lease", clk.Now()))
	clk.Advance(time.Second)
	got, err := s.AcquireLease(t.Context(), orig.ID, "owner-a", ttl)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	until := clk.Now().Add(ttl)
	want := orig
	want.LeaseOwner, want.LeaseUntil = "owner-a", until
	// Version and UpdatedAt track the data, not the lease.
	expectSame(t, "AcquireLease result", got, want)
	expectSame(t, "GetConnection after AcquireLease", mustGet(t, s, orig.ID), want)
}

func testLeaseHeldByOther(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, minimalConnection("conn-held"))
	held, err := s.AcquireLease(ctx, "conn-held", "owner-a", ttl)
	if err != nil {
		t.Fatalf("AcquireLease owner-a: %v", err)
	}
	until := clk.Now().Add(ttl)
	clk.Advance(ttl - time.Second)
	got, err := s.AcquireLease(ctx, "conn-held", "owner-b", ttl)
	if !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("AcquireLease owner-b: err = %v, want ErrLeaseHeld", err)
	}
	expectLease(t, "row returned with ErrLeaseHeld", got, "owner-a", until)
	if got.ID != "conn-held" || got.Version != held.Version {
		t.Errorf("row returned with ErrLeaseHeld: ID %q Version %d, want the stored row", got.ID, got.Version)
	}
	expectLease(t, "stored row", mustGet(t, s, "conn-held"), "owner-a", until)
}

func testLeaseSameOwnerExtends(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, minimalConnection("conn-extend"))
	if _, err := s.AcquireLease(ctx, "conn-extend", "owner-a", ttl); err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	clk.Advance(10 * time.Second)
	got, err := s.AcquireLease(ctx, "conn-extend", "owner-a", ttl)
	if err != nil {
		t.Fatalf("re-AcquireLease by the holder: %v", err)
	}
	until := clk.Now().Add(ttl)
	expectLease(t, "renewed lease", got, "owner-a", until)
	expectLease(t, "stored row", mustGet(t, s, "conn-extend"), "owner-a", until)

	// Past the first expiry the renewed lease still holds.
	clk.Advance(ttl - 5*time.Second)
	if _, err := s.AcquireLease(ctx, "conn-extend", "owner-b", ttl); !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease owner-b within the renewed lease: err = %v, want ErrLeaseHeld", err)
	}
	// A holder whose lease lapsed, with nobody else taking it, gets it back.
	clk.Advance(time.Hour)
	if _, err := s.AcquireLease(ctx, "conn-extend", "owner-a", ttl); err != nil {
		t.Errorf("AcquireLease by the holder after expiry: %v", err)
	}
}

func testLeaseExpired(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, minimalConnection("conn-expire"))
	if _, err := s.AcquireLease(ctx, "conn-expire", "owner-a", ttl); err != nil {
		t.Fatalf("AcquireLease owner-a: %v", err)
	}
	clk.Advance(ttl - time.Millisecond)
	if _, err := s.AcquireLease(ctx, "conn-expire", "owner-b", ttl); !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("AcquireLease owner-b just before expiry: err = %v, want ErrLeaseHeld", err)
	}
	clk.Advance(2 * time.Millisecond)
	got, err := s.AcquireLease(ctx, "conn-expire", "owner-b", ttl)
	if err != nil {
		t.Fatalf("AcquireLease owner-b after expiry: %v", err)
	}
	until := clk.Now().Add(ttl)
	expectLease(t, "taken-over lease", got, "owner-b", until)
	got, err = s.AcquireLease(ctx, "conn-expire", "owner-a", ttl)
	if !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease by the former holder: err = %v, want ErrLeaseHeld", err)
	}
	expectLease(t, "row returned to the former holder", got, "owner-b", until)
}

func testLeaseRelease(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	orig := mustCreate(t, s, minimalConnection("conn-release"))
	if _, err := s.AcquireLease(ctx, orig.ID, "owner-a", ttl); err != nil {
		t.Fatalf("AcquireLease owner-a: %v", err)
	}
	until := clk.Now().Add(ttl)

	if err := s.ReleaseLease(ctx, orig.ID, "owner-b"); err != nil {
		t.Fatalf("ReleaseLease by non-owner: %v", err)
	}
	expectLease(t, "after release by non-owner", mustGet(t, s, orig.ID), "owner-a", until)
	if _, err := s.AcquireLease(ctx, orig.ID, "owner-b", ttl); !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("AcquireLease owner-b after its own no-op release: err = %v, want ErrLeaseHeld", err)
	}

	if err := s.ReleaseLease(ctx, orig.ID, "owner-a"); err != nil {
		t.Fatalf("ReleaseLease by owner: %v", err)
	}
	got := mustGet(t, s, orig.ID)
	expectLease(t, "after release by owner", got, "", time.Time{})
	if got.Version != orig.Version || !sameTime(got.UpdatedAt, orig.UpdatedAt) {
		t.Errorf("lease round trip changed Version %d -> %d or UpdatedAt", orig.Version, got.Version)
	}
	if err := s.ReleaseLease(ctx, orig.ID, "owner-a"); err != nil {
		t.Errorf("second ReleaseLease by owner: %v", err)
	}
	if _, err := s.AcquireLease(ctx, orig.ID, "owner-b", ttl); err != nil {
		t.Fatalf("AcquireLease owner-b after release: %v", err)
	}

	// A holder that lost its lease to expiry cannot release the new one.
	clk.Advance(2 * ttl)
	if _, err := s.AcquireLease(ctx, orig.ID, "owner-c", ttl); err != nil {
		t.Fatalf("AcquireLease owner-c after expiry: %v", err)
	}
	if err := s.ReleaseLease(ctx, orig.ID, "owner-b"); err != nil {
		t.Fatalf("ReleaseLease by the former holder: %v", err)
	}
	expectLease(t, "after release by former holder", mustGet(t, s, orig.ID), "owner-c", clk.Now().Add(ttl))
}

func testLeaseInvalid(t *testing.T, s store.Backend, clk *Clock) {
	mustCreate(t, s, minimalConnection("conn-lease-invalid"))
	for _, tc := range []struct {
		name  string
		owner string
		ttl   time.Duration
	}{
		{"empty owner", "", ttl},
		{"zero ttl", "owner-a", 0},
		{"negative ttl", "owner-a", -time.Second},
	} {
		if _, err := s.AcquireLease(t.Context(), "conn-lease-invalid", tc.owner, tc.ttl); err == nil {
			t.Errorf("%s: AcquireLease succeeded, want an error", tc.name)
		}
	}
	expectLease(t, "stored row", mustGet(t, s, "conn-lease-invalid"), "", time.Time{})
}

// testLeaseRefreshFlow is the broker's refresh: read, lease, renew the lease
// while the provider call runs, then compare-and-swap on the version read
// before the lease. Lease writes must not make that swap conflict.
func testLeaseRefreshFlow(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, fullConnection("conn-flow", clk.Now()))
	read := mustGet(t, s, "conn-flow")
	if _, err := s.AcquireLease(ctx, read.ID, "replica-1", ttl); err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	clk.Advance(ttl / 2)
	if _, err := s.AcquireLease(ctx, read.ID, "replica-1", ttl); err != nil {
		t.Fatalf("renew lease: %v", err)
	}
	next := read
	next.AccessToken = sealed("fake-access-refreshed", 90)
	next.LastRefreshAt = clk.Now()
	saved, err := s.CompareAndSwap(ctx, next)
	if err != nil {
		t.Fatalf("CompareAndSwap after lease renewals: %v", err)
	}
	expectData(t, "saved row", saved, next)
	expectLease(t, "saved row", saved, "replica-1", clk.Now().Add(ttl))
	if err := s.ReleaseLease(ctx, read.ID, "replica-1"); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	got := mustGet(t, s, read.ID)
	expectData(t, "row after release", got, next)
	if got.Version != read.Version+1 {
		t.Errorf("Version = %d, want %d", got.Version, read.Version+1)
	}
}
