package postgres

import (
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store/storetest"
)

// TestOutboxClaimAcrossReplicas: two stores on one database, as two
// replicas have, never claim the same delivery while its claim lives.
func TestOutboxClaimAcrossReplicas(t *testing.T) {
	a, dsn := openFresh(t, Options{})
	b, err := Open(t.Context(), dsn, Options{})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer b.Close()
	storetest.OutboxClaimRace(t, time.Now(), a, b)
}
