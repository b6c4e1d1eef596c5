package storetest

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var errBoom = errors.New("storetest: update aborted on purpose")

var connectionTests = []struct {
	name string
	fn   testFunc
}{
	{"CreateGetRoundTrip", testCreateGetRoundTrip},
	{"CreateGetEmptyFields", testCreateGetEmptyFields},
	{"TokenBytesExact", testTokenBytesExact},
	{"CreateIgnoresStoreOwnedFields", testCreateIgnoresStoreOwnedFields},
	{"CreateAlreadyExists", testCreateAlreadyExists},
	{"CreateInvalid", testCreateInvalid},
	{"NotFound", testNotFound},
	{"Update", testUpdate},
	{"UpdateKeepsLease", testUpdateKeepsLease},
	{"UpdateFuncError", testUpdateFuncError},
	{"UpdateInvalid", testUpdateInvalid},
	{"UpdateStale", testUpdateStale},
	{"UpdateFrom", testUpdateFrom},
	{"UpdateRowDeleted", testUpdateRowDeleted},
	{"CompareAndSwap", testCompareAndSwap},
	{"CompareAndSwapStale", testCompareAndSwapStale},
	{"Delete", testDelete},
	{"IncarnationPerLife", testIncarnationPerLife},
	{"ExpiredAccessTokenKept", testExpiredAccessTokenKept},
	{"Closed", testClosed},
}

func testCreateGetRoundTrip(t *testing.T, s store.Backend, clk *Clock) {
	want := fullConnection("conn-full", clk.Now())
	created := mustCreate(t, s, want)
	expectData(t, "CreateConnection result", created, want)

	now := clk.Now()
	if created.Version != 1 {
		t.Errorf("created Version = %d, want 1", created.Version)
	}
	if !sameTime(created.CreatedAt, now) || !sameTime(created.UpdatedAt, now) {
		t.Errorf("created CreatedAt/UpdatedAt = %v/%v, want the clock's now %v in UTC", created.CreatedAt, created.UpdatedAt, now)
	}
	if created.LeaseOwner != "" || !created.LeaseUntil.IsZero() {
		t.Errorf("created lease = %q until %v, want free", created.LeaseOwner, created.LeaseUntil)
	}

	got := mustGet(t, s, want.ID)
	expectData(t, "GetConnection", got, want)
	expectSame(t, "GetConnection vs CreateConnection result", got, created)
	if got.Failure == nil {
		t.Fatal("Failure came back nil")
	}
	for name, tm := range map[string]time.Time{
		"ExpiresAt": got.ExpiresAt, "RefreshExpiresAt": got.RefreshExpiresAt,
		"RefreshHardExpiresAt": got.RefreshHardExpiresAt, "LastRefreshAt": got.LastRefreshAt,
		"LastUsedAt": got.LastUsedAt, "CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt,
		"Failure.FirstAt": got.Failure.FirstAt, "Failure.NextAttemptAt": got.Failure.NextAttemptAt,
	} {
		if tm.Location() != time.UTC {
			t.Errorf("%s location = %v, want UTC", name, tm.Location())
		}
	}
}

func testCreateGetEmptyFields(t *testing.T, s store.Backend, clk *Clock) {
	want := minimalConnection("conn-min")
	mustCreate(t, s, want)
	got := mustGet(t, s, want.ID)
	expectData(t, "GetConnection", got, want)
	if got.RefreshToken != nil {
		t.Errorf("RefreshToken: got %d bytes (non-nil), want nil", len(got.RefreshToken))
	}
	if got.Failure != nil {
		t.Errorf("Failure = %+v, want nil", *got.Failure)
	}
	if len(got.Metadata) != 0 {
		t.Errorf("Metadata = %s, want empty", got.Metadata)
	}
	if got.ExpiryDefaulted {
		t.Error("ExpiryDefaulted = true, want false")
	}
	for name, tm := range map[string]time.Time{
		"ExpiresAt": got.ExpiresAt, "RefreshExpiresAt": got.RefreshExpiresAt,
		"RefreshHardExpiresAt": got.RefreshHardExpiresAt, "LastRefreshAt": got.LastRefreshAt,
		"LastUsedAt": got.LastUsedAt, "LeaseUntil": got.LeaseUntil,
	} {
		if !tm.IsZero() {
			t.Errorf("%s = %v, want zero", name, tm)
		}
	}

	// A Failure with only some fields set keeps exactly those.
	_, err := s.UpdateConnection(t.Context(), want.ID, func(c store.Connection) (store.Connection, []store.Event, error) {
		c.Failure = &store.Failure{Code: "network", Attempts: 1, FirstAt: clk.Now()}
		return c, nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	got = mustGet(t, s, want.ID)
	if !sameFailure(got.Failure, &store.Failure{Code: "network", Attempts: 1, FirstAt: clk.Now()}) {
		t.Errorf("partial Failure did not round-trip: %+v", got.Failure)
	}
}

func testTokenBytesExact(t *testing.T, s store.Backend, clk *Clock) {
	tests := []struct {
		name            string
		access, refresh []byte
	}{
		{"all byte values", sealed("fake-a", 256), sealed("fake-r", 256)},
		{"large", sealed("fake-a", 16<<10), sealed("fake-r", 8<<10)},
		{"leading NUL", append([]byte{0, 0, 0xff}, "fake"...), []byte{0}},
		{"no refresh token", sealed("fake-a", 64), nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := minimalConnection("conn-bytes-" + string(rune('a'+i)))
			c.AccessToken, c.RefreshToken = tc.access, tc.refresh
			mustCreate(t, s, c)
			got := mustGet(t, s, c.ID)
			expectData(t, "GetConnection", got, c)

			// And again through a compare-and-swap write.
			got.AccessToken, got.RefreshToken = tc.refresh, tc.access
			if len(got.AccessToken) == 0 {
				got.AccessToken = []byte("fake")
			}
			swapped, err := s.CompareAndSwap(t.Context(), got)
			if err != nil {
				t.Fatalf("CompareAndSwap: %v", err)
			}
			expectData(t, "CompareAndSwap result", swapped, got)
			expectData(t, "GetConnection after CompareAndSwap", mustGet(t, s, c.ID), got)
		})
	}
}

func testCreateIgnoresStoreOwnedFields(t *testing.T, s store.Backend, clk *Clock) {
	c := fullConnection("conn-owned", clk.Now())
	c.Version = 99
	c.LeaseOwner = "someone"
	c.LeaseUntil = clk.Now().Add(time.Hour)
	c.CreatedAt = clk.Now().Add(-48 * time.Hour)
	c.UpdatedAt = clk.Now().Add(-24 * time.Hour)
	c.Incarnation = "caller-chosen"
	mustCreate(t, s, c)
	got := mustGet(t, s, c.ID)
	if got.Incarnation == "" || got.Incarnation == c.Incarnation {
		t.Errorf("incarnation %q: the store must assign a new one", got.Incarnation)
	}
	now := clk.Now()
	want := c
	want.Version, want.LeaseOwner, want.LeaseUntil, want.Incarnation = 1, "", time.Time{}, got.Incarnation
	want.CreatedAt, want.UpdatedAt = now, now
	expectSame(t, "GetConnection", got, want)

	// The lease must really be free, not just look free.
	if _, err := s.AcquireLease(t.Context(), c.ID, "other", time.Minute); err != nil {
		t.Errorf("AcquireLease on a new connection: %v", err)
	}
}

func testCreateAlreadyExists(t *testing.T, s store.Backend, clk *Clock) {
	first := fullConnection("conn-dup", clk.Now())
	mustCreate(t, s, first)
	second := minimalConnection("conn-dup")
	second.Provider = "other-provider"
	if _, err := s.CreateConnection(t.Context(), second); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second CreateConnection: err = %v, want ErrAlreadyExists", err)
	}
	got := mustGet(t, s, first.ID)
	expectData(t, "GetConnection after duplicate create", got, first)
	if got.Version != 1 {
		t.Errorf("Version = %d, want 1", got.Version)
	}
}

func testCreateInvalid(t *testing.T, s store.Backend, clk *Clock) {
	tests := []struct {
		name   string
		modify func(*store.Connection)
	}{
		{"empty id", func(c *store.Connection) { c.ID = "" }},
		{"empty provider", func(c *store.Connection) { c.Provider = "" }},
		{"empty status", func(c *store.Connection) { c.Status = "" }},
		{"unknown status", func(c *store.Connection) { c.Status = "refreshing" }},
		{"metadata not JSON", func(c *store.Connection) { c.Metadata = json.RawMessage(`{"n":`) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := minimalConnection("conn-invalid")
			tc.modify(&c)
			if _, err := s.CreateConnection(t.Context(), c); err == nil {
				t.Fatal("CreateConnection succeeded, want an error")
			}
			page, err := s.ListConnections(t.Context(), store.ListOptions{})
			if err != nil {
				t.Fatalf("ListConnections: %v", err)
			}
			if len(page.Connections) != 0 {
				t.Errorf("store holds %d connections after a rejected create, want 0", len(page.Connections))
			}
		})
	}
}

func testNotFound(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, minimalConnection("conn-present"))
	const id = "conn-absent"
	called := false
	missing := minimalConnection(id)
	missing.Version = 1
	tests := []struct {
		name string
		call func() error
	}{
		{"GetConnection", func() error { _, err := s.GetConnection(ctx, id); return err }},
		{"UpdateConnection", func() error {
			_, err := s.UpdateConnection(ctx, id, func(c store.Connection) (store.Connection, []store.Event, error) {
				called = true
				return c, nil, nil
			})
			return err
		}},
		{"CompareAndSwap", func() error { _, err := s.CompareAndSwap(ctx, missing); return err }},
		{"DeleteConnection", func() error { return s.DeleteConnection(ctx, id) }},
		{"AcquireLease", func() error { _, err := s.AcquireLease(ctx, id, "owner", time.Minute); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("err = %v, want ErrNotFound", err)
			}
		})
	}
	if called {
		t.Error("UpdateConnection called update for a missing row")
	}
	if err := s.ReleaseLease(ctx, id, "owner"); err != nil {
		t.Errorf("ReleaseLease on a missing row: err = %v, want nil (no-op)", err)
	}
	if _, err := s.GetConnection(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a call on a missing id created it: GetConnection err = %v", err)
	}
}

func testUpdate(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	orig := mustCreate(t, s, fullConnection("conn-upd", clk.Now()))
	clk.Advance(90 * time.Second)

	var seen store.Connection
	want := orig
	updated, err := s.UpdateConnection(ctx, orig.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		seen = old
		old.Status = store.StatusNeedsReauth
		old.AccessToken = sealed("fake-access-2", 100)
		old.RefreshToken = nil
		old.Scope = "read"
		old.ExpiresAt = time.Time{}
		old.ExpiryDefaulted = false
		old.Failure = nil
		old.Metadata = json.RawMessage(`{"n":1}`)
		old.LastRefreshAt = clk.Now()
		// Store-owned fields: the store must ignore these.
		old.Version = 1000
		old.CreatedAt = time.Unix(0, 0)
		old.UpdatedAt = time.Unix(0, 0)
		want = old
		return old, nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	expectSame(t, "row passed to update", seen, orig)
	now := clk.Now()
	want.Version, want.CreatedAt, want.UpdatedAt = 2, orig.CreatedAt, now
	expectSame(t, "UpdateConnection result", updated, want)
	expectSame(t, "GetConnection after update", mustGet(t, s, orig.ID), want)
	if updated.RefreshToken != nil {
		t.Error("RefreshToken set to nil came back non-nil")
	}

	// Changing the id is not an update of this row.
	_, err = s.UpdateConnection(ctx, orig.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		old.ID = "conn-other"
		return old, nil, nil
	})
	if !errors.Is(err, store.ErrIDChanged) {
		t.Errorf("UpdateConnection that changed the id: %v, want ErrIDChanged", err)
	}
	if _, err := s.GetConnection(ctx, "conn-other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetConnection(conn-other) err = %v, want ErrNotFound", err)
	}
	if got := mustGet(t, s, orig.ID); got.Version != 2 {
		t.Errorf("Version after rejected id change = %d, want 2", got.Version)
	}
}

func testUpdateKeepsLease(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, fullConnection("conn-lease-upd", clk.Now()))
	leased, err := s.AcquireLease(ctx, "conn-lease-upd", "owner-a", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	updated, err := s.UpdateConnection(ctx, "conn-lease-upd", func(old store.Connection) (store.Connection, []store.Event, error) {
		if old.LeaseOwner != "owner-a" {
			t.Errorf("update saw LeaseOwner %q, want owner-a", old.LeaseOwner)
		}
		old.LeaseOwner = "intruder"
		old.LeaseUntil = clk.Now().Add(24 * time.Hour)
		old.Scope = "changed"
		return old, nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	for what, c := range map[string]store.Connection{"result": updated, "stored": mustGet(t, s, "conn-lease-upd")} {
		if c.LeaseOwner != "owner-a" || !sameTime(c.LeaseUntil, leased.LeaseUntil) {
			t.Errorf("%s lease = %q until %v, want owner-a until %v", what, c.LeaseOwner, c.LeaseUntil, leased.LeaseUntil)
		}
		if c.Scope != "changed" || c.Version != 2 {
			t.Errorf("%s: Scope %q Version %d, want changed, 2", what, c.Scope, c.Version)
		}
	}
}

func testUpdateFuncError(t *testing.T, s store.Backend, clk *Clock) {
	orig := mustCreate(t, s, fullConnection("conn-abort", clk.Now()))
	clk.Advance(time.Second)
	_, err := s.UpdateConnection(t.Context(), orig.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		old.Scope = "must-not-be-written"
		old.Status = store.StatusRevoked
		return old, nil, errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want the update func's error", err)
	}
	expectSame(t, "GetConnection after aborted update", mustGet(t, s, orig.ID), orig)
}

func testUpdateInvalid(t *testing.T, s store.Backend, clk *Clock) {
	orig := mustCreate(t, s, fullConnection("conn-upd-invalid", clk.Now()))
	tests := []struct {
		name   string
		modify func(*store.Connection)
	}{
		{"unknown status", func(c *store.Connection) { c.Status = "refreshing" }},
		{"empty provider", func(c *store.Connection) { c.Provider = "" }},
		{"metadata not JSON", func(c *store.Connection) { c.Metadata = json.RawMessage(`not json`) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.UpdateConnection(t.Context(), orig.ID, func(c store.Connection) (store.Connection, []store.Event, error) {
				tc.modify(&c)
				return c, nil, nil
			})
			if err == nil {
				t.Error("UpdateConnection succeeded, want an error")
			}
			c := orig
			tc.modify(&c)
			if _, err := s.CompareAndSwap(t.Context(), c); err == nil {
				t.Error("CompareAndSwap succeeded, want an error")
			}
			expectSame(t, "GetConnection", mustGet(t, s, orig.ID), orig)
		})
	}
}

// testUpdateStale provokes the lost race deterministically: another write
// lands between UpdateConnection's read and its write.
func testUpdateStale(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	orig := mustCreate(t, s, fullConnection("conn-stale-upd", clk.Now()))
	var inner store.Connection
	calls := 0
	_, err := s.UpdateConnection(ctx, orig.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		calls++
		var err error
		inner, err = s.UpdateConnection(ctx, orig.ID, func(c store.Connection) (store.Connection, []store.Event, error) {
			c.Scope = "inner"
			return c, nil, nil
		})
		if err != nil {
			t.Errorf("inner UpdateConnection: %v", err)
		}
		old.Scope = "outer-stale"
		return old, nil, nil
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("outer UpdateConnection err = %v, want ErrConflict", err)
	}
	if calls != 1 {
		t.Errorf("update called %d times, want 1 (no internal retry)", calls)
	}
	got := mustGet(t, s, orig.ID)
	expectSame(t, "GetConnection after lost race", got, inner)
	if got.Scope != "inner" || got.Version != 2 {
		t.Errorf("stored Scope %q Version %d, want inner, 2", got.Scope, got.Version)
	}
}

// testUpdateFrom: store.UpdateFrom writes on the row the caller holds when
// it is current, and falls back to reading the row when it is not, so the
// other writer's change is kept.
func testUpdateFrom(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	orig := mustCreate(t, s, fullConnection("conn-update-from", clk.Now()))
	var seen []int64
	setScope := func(scope string) store.Updater {
		return func(old store.Connection) (store.Connection, []store.Event, error) {
			seen = append(seen, old.Version)
			old.Scope = scope
			return old, nil, nil
		}
	}
	first, err := store.UpdateFrom(ctx, s, orig, setScope("from-current"))
	if err != nil {
		t.Fatalf("UpdateFrom on the current row: %v", err)
	}
	if first.Version != orig.Version+1 || first.Scope != "from-current" || !slices.Equal(seen, []int64{orig.Version}) {
		t.Fatalf("UpdateFrom on the current row: version %d scope %q, update saw versions %v; want %d, from-current, [%d]",
			first.Version, first.Scope, seen, orig.Version+1, orig.Version)
	}

	// orig is stale now: another write landed (first). The update must
	// be applied again to the stored row, not overwrite it.
	seen = nil
	meta := json.RawMessage(`{"by":"other writer"}`)
	other, err := store.Update(ctx, s, orig.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		old.Metadata = meta
		return old, nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.UpdateFrom(ctx, s, orig, setScope("from-stale"))
	if err != nil {
		t.Fatalf("UpdateFrom on a stale row: %v", err)
	}
	if !slices.Equal(seen, []int64{orig.Version, other.Version}) {
		t.Errorf("update saw versions %v, want [%d %d]: the stale row first, then the stored one", seen, orig.Version, other.Version)
	}
	if got.Version != other.Version+1 || got.Scope != "from-stale" || string(got.Metadata) != string(other.Metadata) {
		t.Errorf("after UpdateFrom on a stale row: version %d scope %q metadata %s; want %d, from-stale, %s",
			got.Version, got.Scope, got.Metadata, other.Version+1, other.Metadata)
	}
	expectSame(t, "GetConnection after UpdateFrom", mustGet(t, s, orig.ID), got)
}

func testUpdateRowDeleted(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	orig := mustCreate(t, s, minimalConnection("conn-gone"))
	_, err := s.UpdateConnection(ctx, orig.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		if err := s.DeleteConnection(ctx, orig.ID); err != nil {
			t.Errorf("DeleteConnection inside update: %v", err)
		}
		old.Scope = "too late"
		return old, nil, nil
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateConnection err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetConnection(ctx, orig.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetConnection err = %v, want ErrNotFound: the update resurrected the row", err)
	}
}

func testCompareAndSwap(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	orig := mustCreate(t, s, fullConnection("conn-cas", clk.Now()))
	leased, err := s.AcquireLease(ctx, orig.ID, "owner-a", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if leased.Version != orig.Version {
		t.Errorf("AcquireLease changed Version %d -> %d", orig.Version, leased.Version)
	}
	clk.Advance(5 * time.Second)

	next := leased
	next.AccessToken = sealed("fake-access-rotated", 120)
	next.RefreshToken = sealed("fake-refresh-rotated", 120)
	next.ExpiresAt = clk.Now().Add(time.Hour)
	next.LastRefreshAt = clk.Now()
	next.Failure = nil
	next.LeaseOwner = "intruder"
	next.LeaseUntil = time.Time{}
	next.CreatedAt = time.Unix(0, 0)
	swapped, err := s.CompareAndSwap(ctx, next)
	if err != nil {
		t.Fatalf("CompareAndSwap with the current version: %v", err)
	}
	want := next
	want.Version = orig.Version + 1
	want.LeaseOwner, want.LeaseUntil = "owner-a", leased.LeaseUntil
	want.CreatedAt, want.UpdatedAt = orig.CreatedAt, clk.Now()
	expectSame(t, "CompareAndSwap result", swapped, want)
	expectSame(t, "GetConnection after CompareAndSwap", mustGet(t, s, orig.ID), want)

	// The same write again is now stale.
	if _, err := s.CompareAndSwap(ctx, next); !errors.Is(err, store.ErrConflict) {
		t.Errorf("repeated CompareAndSwap err = %v, want ErrConflict", err)
	}
	zero := swapped
	zero.Version = 0
	if _, err := s.CompareAndSwap(ctx, zero); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CompareAndSwap with Version 0: err = %v, want ErrConflict", err)
	}
	ahead := swapped
	ahead.Version++
	if _, err := s.CompareAndSwap(ctx, ahead); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CompareAndSwap with a future Version: err = %v, want ErrConflict", err)
	}
	expectSame(t, "GetConnection after rejected swaps", mustGet(t, s, orig.ID), want)
}

// testCompareAndSwapStale is the stale write of the design: a refresh that
// started from version N cannot overwrite N+1.
func testCompareAndSwapStale(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	snapshot := mustCreate(t, s, fullConnection("conn-cas-stale", clk.Now()))

	newer := snapshot
	newer.AccessToken = sealed("fake-access-newer", 80)
	newer.RefreshToken = sealed("fake-refresh-newer", 80)
	clk.Advance(time.Second)
	newerStored, err := s.CompareAndSwap(ctx, newer)
	if err != nil {
		t.Fatalf("first CompareAndSwap: %v", err)
	}

	stale := snapshot
	stale.AccessToken = sealed("fake-access-stale", 80)
	stale.RefreshToken = sealed("fake-refresh-stale", 80)
	clk.Advance(time.Second)
	if _, err := s.CompareAndSwap(ctx, stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale CompareAndSwap err = %v, want ErrConflict", err)
	}
	got := mustGet(t, s, snapshot.ID)
	expectSame(t, "GetConnection after stale write", got, newerStored)
	if got.Version != snapshot.Version+1 {
		t.Errorf("Version = %d, want %d", got.Version, snapshot.Version+1)
	}
}

func testDelete(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, fullConnection("conn-del", clk.Now()))
	mustCreate(t, s, minimalConnection("conn-keep"))
	if _, err := s.AcquireLease(ctx, "conn-del", "owner-a", time.Minute); err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if err := s.DeleteConnection(ctx, "conn-del"); err != nil {
		t.Fatalf("DeleteConnection (leased row): %v", err)
	}
	if _, err := s.GetConnection(ctx, "conn-del"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetConnection after delete: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteConnection(ctx, "conn-del"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteConnection: err = %v, want ErrNotFound", err)
	}
	mustGet(t, s, "conn-keep")

	// The id is free again and starts over.
	c := mustCreate(t, s, minimalConnection("conn-del"))
	if c.Version != 1 || c.LeaseOwner != "" {
		t.Errorf("recreated row: Version %d LeaseOwner %q, want 1 and free", c.Version, c.LeaseOwner)
	}
}

// testExpiredAccessTokenKept guards against the refresh-token loss of the
// design: access and refresh tokens have independent lifetimes.
func testExpiredAccessTokenKept(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	c := fullConnection("conn-expired", clk.Now())
	c.ExpiresAt = clk.Now().Add(-time.Hour)
	c.RefreshExpiresAt = clk.Now().Add(365 * 24 * time.Hour)
	mustCreate(t, s, c)
	mustCreate(t, s, minimalConnection("conn-other"))
	clk.Advance(48 * time.Hour)

	got := mustGet(t, s, c.ID)
	expectData(t, "GetConnection of expired connection", got, c)
	for _, opts := range []store.ListOptions{{}, {Provider: "acme", Status: store.StatusActive}} {
		page, err := s.ListConnections(ctx, opts)
		if err != nil {
			t.Fatalf("ListConnections(%+v): %v", opts, err)
		}
		found := false
		for _, l := range page.Connections {
			found = found || l.ID == c.ID
		}
		if !found {
			t.Errorf("ListConnections(%+v) does not list the connection with an expired access token", opts)
		}
	}
	if _, err := s.AcquireLease(ctx, c.ID, "refresher", time.Minute); err != nil {
		t.Errorf("AcquireLease on expired connection: %v", err)
	}
	if _, err := s.UpdateConnection(ctx, c.ID, func(old store.Connection) (store.Connection, []store.Event, error) { return old, nil, nil }); err != nil {
		t.Errorf("UpdateConnection on expired connection: %v", err)
	}
}

func testClosed(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	mustCreate(t, s, minimalConnection("conn-closed"))
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping on an open store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"GetConnection", func() error { _, err := s.GetConnection(ctx, "conn-closed"); return err }},
		{"CreateConnection", func() error { _, err := s.CreateConnection(ctx, minimalConnection("conn-new")); return err }},
		{"UpdateConnection", func() error {
			_, err := s.UpdateConnection(ctx, "conn-closed", func(c store.Connection) (store.Connection, []store.Event, error) { return c, nil, nil })
			return err
		}},
		{"ListConnections", func() error { _, err := s.ListConnections(ctx, store.ListOptions{}); return err }},
		{"AcquireLease", func() error { _, err := s.AcquireLease(ctx, "conn-closed", "o", time.Minute); return err }},
		{"CountAPIKeys", func() error { _, err := s.CountAPIKeys(ctx); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("err = %v, want ErrUnavailable", err)
			}
		})
	}
}

// testIncarnationPerLife: every create starts a new incarnation, and a write
// prepared against one life of an id never lands in the next, even at the
// same version (a delete and a re-create restart the version at 1).
func testIncarnationPerLife(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	first := mustCreate(t, s, minimalConnection("conn-life"))
	if first.Incarnation == "" {
		t.Fatal("created connection has no incarnation")
	}
	first.Incarnation = "caller-chosen"
	if got := mustGet(t, s, first.ID); got.Incarnation == "caller-chosen" || got.Incarnation == "" {
		t.Fatalf("stored incarnation %q: the store must assign it", got.Incarnation)
	}
	first = mustGet(t, s, first.ID)
	if err := s.DeleteConnection(ctx, first.ID); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	second := mustCreate(t, s, minimalConnection("conn-life"))
	if second.Incarnation == first.Incarnation {
		t.Fatalf("re-created connection kept incarnation %q", first.Incarnation)
	}
	if second.Version != first.Version {
		t.Fatalf("versions %d and %d: the test needs both lives at one version", first.Version, second.Version)
	}
	stale := first
	stale.Scope = "from the deleted life"
	if _, err := s.CompareAndSwap(ctx, stale); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CompareAndSwap with the deleted life's incarnation: %v, want ErrNotFound", err)
	}
	if got := mustGet(t, s, second.ID); got.Scope != "" || got.Incarnation != second.Incarnation {
		t.Fatalf("the new life was written by the old one's CompareAndSwap (scope %q)", got.Scope)
	}
	// UpdateConnection carries the incarnation it read, whatever the
	// updater sets.
	upd, err := s.UpdateConnection(ctx, second.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
		old.Incarnation = first.Incarnation
		old.Scope = "updated"
		return old, nil, nil
	})
	if err != nil || upd.Incarnation != second.Incarnation || upd.Scope != "updated" {
		t.Fatalf("UpdateConnection = incarnation %q scope %q, %v; want the row's own incarnation", upd.Incarnation, upd.Scope, err)
	}
}
