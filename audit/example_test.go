package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// A recorder in front of a store: Record never waits for the database;
// Run writes the entries in batches.
func Example() {
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "tb.db"), sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	rec, _ := audit.New(audit.Options{Store: st})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()

	rec.Record(store.AuditEntry{Actor: "billing-service", Action: "token.read", ConnectionID: "alice", Outcome: "ok"})
	_ = rec.Flush(context.Background())
	stop()
	<-done

	entries, _ := st.ListAudit(context.Background(), store.AuditFilter{ConnectionID: "alice"})
	fmt.Println(entries[0].Actor, entries[0].Action, entries[0].Outcome)
	// Output: billing-service token.read ok
}
