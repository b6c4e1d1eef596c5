package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var concurrencyTests = []struct {
	name string
	fn   testFunc
}{
	{"Updates", testConcurrentUpdates},
	{"CompareAndSwap", testConcurrentCompareAndSwap},
	{"AcquireLease", testConcurrentAcquireLease},
}

// readWhile runs readers against id until stop is closed and reports any
// error they saw: a backend must not fail reads (SQLITE_BUSY, say) while
// writers are busy.
func readWhile(t *testing.T, s store.Store, id string, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	var failures atomic.Int64
	var first atomic.Value
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := s.GetConnection(t.Context(), id)
				if err == nil {
					_, err = s.ListConnections(t.Context(), store.ListOptions{Limit: 10})
				}
				if err != nil {
					if failures.Add(1) == 1 {
						first.Store(err)
					}
					return
				}
			}
		})
	}
	return func() {
		wg.Wait()
		if n := failures.Load(); n > 0 {
			t.Errorf("%d concurrent readers failed, first: %v", n, first.Load())
		}
	}
}

// testConcurrentUpdates: 50 writers each add one to a counter in Metadata
// through UpdateConnection, retrying on ErrConflict. No increment may be lost.
func testConcurrentUpdates(t *testing.T, s store.Backend, clk *Clock) {
	const workers = 50
	c := minimalConnection("conn-counter")
	c.Metadata = withCounter(0)
	mustCreate(t, s, c)

	stop := make(chan struct{})
	waitReaders := readWhile(t, s, c.ID, stop)

	var successes, conflicts atomic.Int64
	errs := make(chan error, workers)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-begin
			// Each conflict means another writer succeeded after this one
			// read, so a writer can lose at most workers-1 times.
			for attempt := 1; attempt <= workers; attempt++ {
				_, err := s.UpdateConnection(t.Context(), c.ID, func(old store.Connection) (store.Connection, []store.Event, error) {
					n, err := counter(old.Metadata)
					if err != nil {
						return old, nil, fmt.Errorf("metadata does not decode: %w", err)
					}
					old.Metadata = withCounter(n + 1)
					return old, nil, nil
				})
				switch {
				case err == nil:
					successes.Add(1)
					return
				case errors.Is(err, store.ErrConflict):
					conflicts.Add(1)
				default:
					errs <- fmt.Errorf("writer %d attempt %d: %w", w, attempt, err)
					return
				}
			}
			errs <- fmt.Errorf("writer %d: still conflicting after %d attempts, more than the other writers could cause", w, workers)
		})
	}
	close(begin)
	wg.Wait()
	close(stop)
	waitReaders()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	got := mustGet(t, s, c.ID)
	n, err := counter(got.Metadata)
	if err != nil {
		t.Fatalf("final metadata does not decode: %v", err)
	}
	if n != int(successes.Load()) || n != workers {
		t.Errorf("counter = %d, successful updates = %d, want both %d (%d conflicts retried)", n, successes.Load(), workers, conflicts.Load())
	}
	if got.Version != 1+workers {
		t.Errorf("Version = %d, want %d", got.Version, 1+workers)
	}
}

// testConcurrentCompareAndSwap: 20 writers swap from the same snapshot;
// exactly one may win.
func testConcurrentCompareAndSwap(t *testing.T, s store.Backend, clk *Clock) {
	const workers = 20
	snapshot := mustCreate(t, s, minimalConnection("conn-cas-race"))
	results := make([]error, workers)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			next := snapshot
			next.Metadata = withCounter(w)
			<-begin
			_, results[w] = s.CompareAndSwap(t.Context(), next)
		})
	}
	close(begin)
	wg.Wait()

	winner := -1
	for w, err := range results {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("writers %d and %d both won the swap from version %d", winner, w, snapshot.Version)
			}
			winner = w
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("writer %d: err = %v, want nil or ErrConflict", w, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won the swap")
	}
	got := mustGet(t, s, snapshot.ID)
	if n, err := counter(got.Metadata); err != nil || n != winner {
		t.Errorf("stored counter = %d (%v), want the winner's %d", n, err, winner)
	}
	if got.Version != snapshot.Version+1 {
		t.Errorf("Version = %d, want %d", got.Version, snapshot.Version+1)
	}
}

// testConcurrentAcquireLease: 20 owners race for one free lease; exactly one
// wins while it is live and everyone else sees who.
func testConcurrentAcquireLease(t *testing.T, s store.Backend, clk *Clock) {
	const workers = 20
	c := mustCreate(t, s, minimalConnection("conn-lease-race"))
	type result struct {
		row store.Connection
		err error
	}
	results := make([]result, workers)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-begin
			row, err := s.AcquireLease(t.Context(), c.ID, fmt.Sprintf("owner-%02d", w), ttl)
			results[w] = result{row, err}
		})
	}
	close(begin)
	wg.Wait()

	winner := ""
	for w, r := range results {
		owner := fmt.Sprintf("owner-%02d", w)
		switch {
		case r.err == nil:
			if winner != "" {
				t.Errorf("%s and %s both hold the lease", winner, owner)
			}
			winner = owner
			if r.row.LeaseOwner != owner {
				t.Errorf("%s won but its row names %q", owner, r.row.LeaseOwner)
			}
		case !errors.Is(r.err, store.ErrLeaseHeld):
			t.Errorf("%s: err = %v, want nil or ErrLeaseHeld", owner, r.err)
		}
	}
	if winner == "" {
		t.Fatal("nobody won the lease")
	}
	until := clk.Now().Add(ttl)
	for w, r := range results {
		if r.err != nil {
			expectLease(t, fmt.Sprintf("row returned to owner-%02d", w), r.row, winner, until)
		}
	}
	got := mustGet(t, s, c.ID)
	expectLease(t, "stored row", got, winner, until)
	if got.Version != c.Version {
		t.Errorf("Version = %d after lease race, want %d", got.Version, c.Version)
	}

	// Once the winner's lease lapses, the race is open again.
	clk.Advance(ttl + time.Second)
	if _, err := s.AcquireLease(t.Context(), c.ID, "owner-late", ttl); err != nil {
		t.Errorf("AcquireLease after the winner's lease expired: %v", err)
	}
}
