package postgres

import (
	"testing"
	"time"
)

// TestAsyncCommitIsThatTransactionsOnly: the bookkeeping writes commit
// without waiting for the WAL flush, and that setting ends with their own
// transaction: a pooled connection that ran one still commits the next
// write (a token) synchronously.
func TestAsyncCommitIsThatTransactionsOnly(t *testing.T) {
	s, _ := openFresh(t, Options{MaxConns: 1}) // every statement on one connection
	ctx := t.Context()
	if _, err := s.CreateConnection(ctx, fakeConnection("c1")); err != nil {
		t.Fatal(err)
	}
	show := func() string {
		t.Helper()
		var v string
		if err := s.pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The test server runs with synchronous_commit off (scripts/pg.sh);
	// this session commits durably, as production does.
	if _, err := s.pool.Exec(ctx, `SET synchronous_commit = on`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "c1", "owner", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, "c1", "owner"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimDue(ctx, "sched", time.Now().Add(time.Hour), 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseClaim(ctx, "sched", "c1"); err != nil {
		t.Fatal(err)
	}
	if v := show(); v != "on" {
		t.Fatalf("synchronous_commit is %q after the bookkeeping writes, want on: their setting leaked into the connection", v)
	}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE connections SET lease_owner = NULL FROM `+asyncCommit+` WHERE id = 'c1'`); err != nil {
		t.Fatal(err)
	}
	var inTx string
	if err := tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&inTx); err != nil {
		t.Fatal(err)
	}
	if inTx != "off" {
		t.Fatalf("synchronous_commit is %q inside a write joined with asyncCommit, want off", inTx)
	}
}
