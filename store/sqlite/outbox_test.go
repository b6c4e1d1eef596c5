package sqlite

import (
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store/storetest"
)

// TestOutboxClaimAcrossProcesses: two stores on one file, as two processes
// opening it have, never claim the same delivery while its claim lives.
func TestOutboxClaimAcrossProcesses(t *testing.T) {
	a, path := openTemp(t, nil)
	b, err := Open(t.Context(), path, Options{Logger: discard()})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer b.Close()
	storetest.OutboxClaimRace(t, time.Now(), a, b)
}
