package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var batchTests = []struct {
	name string
	fn   testFunc
}{
	{"CreateConnections", testBatchCreate},
	{"TakenIDStoresNothing", testBatchTakenID},
	{"RepeatedIDStoresNothing", testBatchRepeatedID},
	{"InvalidItemStoresNothing", testBatchInvalidItem},
	{"Bounds", testBatchBounds},
}

// batchOf is n connections, the first a full one and the rest minimal
// with a next refresh each, and one connection.created event per
// connection.
func batchOf(prefix string, n int, clk *Clock) ([]store.Connection, []store.Event) {
	cs := make([]store.Connection, n)
	events := make([]store.Event, n)
	for i := range cs {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		if i == 0 {
			cs[i] = fullConnection(id, clk.Now())
		} else {
			cs[i] = minimalConnection(id)
			cs[i].NextRefreshAt = clk.Now().Add(time.Duration(i) * time.Minute)
		}
		events[i] = store.Event{Type: "connection.created", ConnectionID: id, Provider: cs[i].Provider, At: clk.Now()}
	}
	return cs, events
}

// expectAbsent fails for every connection of cs that is stored, and every
// event queued for one.
func expectAbsent(t *testing.T, s store.Backend, cs []store.Connection) {
	t.Helper()
	for _, c := range cs {
		if _, err := s.GetConnection(t.Context(), c.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetConnection(%q) after a refused batch: err = %v, want ErrNotFound (nothing of the batch stored)", c.ID, err)
		}
		if evs := mustConnectionEvents(t, s, c.ID); len(evs) != 0 {
			t.Errorf("events of %q after a refused batch: %v, want none", c.ID, evs)
		}
	}
}

func testBatchCreate(t *testing.T, s store.Backend, clk *Clock) {
	cs, events := batchOf("batch", 25, clk)
	if err := s.CreateConnections(t.Context(), cs, events); err != nil {
		t.Fatalf("CreateConnections: %v", err)
	}
	incarnations := map[string]string{}
	for i, want := range cs {
		got := mustGet(t, s, want.ID)
		expectData(t, fmt.Sprintf("GetConnection(%q) after CreateConnections", want.ID), got, want)
		if got.Version != 1 {
			t.Errorf("%s: Version = %d, want 1", want.ID, got.Version)
		}
		if !sameTime(got.CreatedAt, clk.Now()) || !sameTime(got.UpdatedAt, clk.Now()) {
			t.Errorf("%s: CreatedAt/UpdatedAt = %v/%v, want the clock's now %v", want.ID, got.CreatedAt, got.UpdatedAt, clk.Now())
		}
		if got.LeaseOwner != "" || !got.LeaseUntil.IsZero() {
			t.Errorf("%s: lease = %q until %v, want free", want.ID, got.LeaseOwner, got.LeaseUntil)
		}
		if !sameTime(got.NextRefreshAt, want.NextRefreshAt) {
			t.Errorf("%s: NextRefreshAt = %v, want %v", want.ID, got.NextRefreshAt, want.NextRefreshAt)
		}
		if got.Incarnation == "" {
			t.Errorf("%s: Incarnation is empty", want.ID)
		} else if other, dup := incarnations[got.Incarnation]; dup {
			t.Errorf("%s and %s share incarnation %q", want.ID, other, got.Incarnation)
		}
		incarnations[got.Incarnation] = want.ID
		evs := mustConnectionEvents(t, s, want.ID)
		if len(evs) != 1 || evs[0].Type != "connection.created" || evs[0].Provider != want.Provider || evs[0].ID == "" {
			t.Errorf("events of %s (item %d) = %+v, want one connection.created with an id", want.ID, i, evs)
		}
	}
	// The batch's rows are ordinary rows: listed, and updated by
	// compare-and-swap on version 1.
	page, err := s.ListConnections(t.Context(), store.ListOptions{Limit: store.MaxListLimit})
	if err != nil || len(page.Connections) != len(cs) {
		t.Fatalf("ListConnections = %d connections, %v; want %d", len(page.Connections), err, len(cs))
	}
	row := mustGet(t, s, cs[3].ID)
	row.Scope = "changed"
	if out, err := s.CompareAndSwap(t.Context(), row); err != nil || out.Version != 2 {
		t.Fatalf("CompareAndSwap on a batch row: version %d, err %v; want version 2", out.Version, err)
	}
	// Due rows are claimable like created ones.
	clk.Advance(2 * time.Minute)
	claims, err := s.ClaimDue(t.Context(), "owner", clk.Now(), 100, time.Minute)
	if err != nil {
		t.Fatalf("ClaimDue: %v", err)
	}
	if len(claims) == 0 {
		t.Errorf("ClaimDue after the batch's first next refreshes passed: no claims")
	}
}

func testBatchTakenID(t *testing.T, s store.Backend, clk *Clock) {
	taken := mustCreate(t, s, minimalConnection("batch-0007"))
	cs, events := batchOf("batch", 12, clk)
	err := s.CreateConnections(t.Context(), cs, events)
	var ie *store.ItemError
	if !errors.As(err, &ie) || !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateConnections with a taken id: err = %v, want an *ItemError wrapping ErrAlreadyExists", err)
	}
	if ie.Index != 7 || ie.ID != "batch-0007" {
		t.Errorf("ItemError names item %d (%q), want 7 (batch-0007)", ie.Index, ie.ID)
	}
	expectAbsent(t, s, append(cs[:7:7], cs[8:]...))
	got := mustGet(t, s, "batch-0007")
	expectSame(t, "the taken connection after the refused batch", got, taken)
}

func testBatchRepeatedID(t *testing.T, s store.Backend, clk *Clock) {
	cs, events := batchOf("batch", 6, clk)
	cs[4].ID, events[4].ConnectionID = cs[1].ID, cs[1].ID
	err := s.CreateConnections(t.Context(), cs, events)
	var ie *store.ItemError
	if !errors.As(err, &ie) || !errors.Is(err, store.ErrAlreadyExists) || ie.Index != 4 {
		t.Fatalf("CreateConnections with an id twice: err = %v, want an *ItemError for item 4 wrapping ErrAlreadyExists", err)
	}
	expectAbsent(t, s, cs)
}

func testBatchInvalidItem(t *testing.T, s store.Backend, clk *Clock) {
	cs, events := batchOf("batch", 6, clk)
	cs[5].Status = "bogus"
	err := s.CreateConnections(t.Context(), cs, events)
	var ie *store.ItemError
	if !errors.As(err, &ie) || ie.Index != 5 {
		t.Fatalf("CreateConnections with an invalid status: err = %v, want an *ItemError for item 5", err)
	}
	expectAbsent(t, s, cs)
}

func testBatchBounds(t *testing.T, s store.Backend, clk *Clock) {
	if err := s.CreateConnections(t.Context(), nil, nil); err != nil {
		t.Errorf("CreateConnections of nothing: %v, want nil", err)
	}
	cs, _ := batchOf("big", store.MaxBatch+1, clk)
	if err := s.CreateConnections(t.Context(), cs, nil); err == nil {
		t.Fatalf("CreateConnections of %d connections: nil error, want the batch refused", len(cs))
	}
	if _, err := s.GetConnection(t.Context(), cs[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a too-large batch stored %q (err %v)", cs[0].ID, err)
	}
	// A full batch without events is stored.
	cs = cs[:store.MaxBatch]
	if err := s.CreateConnections(t.Context(), cs, nil); err != nil {
		t.Fatalf("CreateConnections of %d: %v", len(cs), err)
	}
	mustGet(t, s, cs[len(cs)-1].ID)
}
