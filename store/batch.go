package store

import (
	"context"
	"fmt"
)

// MaxBatch caps the connections of one [Store.CreateConnections] call: a
// batch is one transaction, and a bounded one keeps the write lock (SQLite)
// and the transaction's memory (PostgreSQL) short.
const MaxBatch = 1000

// ItemError says which item of a batch was refused. Nothing of the batch
// was stored. Err is the reason ([ErrAlreadyExists], or the item's own
// error); match it with [errors.Is] or [errors.As] through the ItemError.
type ItemError struct {
	// Index is the item's position in the batch, from 0.
	Index int
	ID    string
	Err   error
}

func (e *ItemError) Error() string {
	return fmt.Sprintf("item %d (connection %q): %v", e.Index, e.ID, e.Err)
}

func (e *ItemError) Unwrap() error { return e.Err }

// BatchCreator creates many connections in one transaction. Both backends
// implement it (Store embeds it).
type BatchCreator interface {
	// CreateConnections stores every c of cs as CreateConnection would
	// (Version 1, a new Incarnation each, CreatedAt/UpdatedAt from the
	// store's clock, a free lease) and queues events, all in one
	// transaction: all of cs is stored or none. An id that is taken, or
	// repeated in cs, fails the batch with an *ItemError wrapping
	// ErrAlreadyExists that names the first such item. More than
	// [MaxBatch] connections is an error; an empty cs does nothing.
	CreateConnections(ctx context.Context, cs []Connection, events []Event) error
}

// CheckBatch checks what every backend requires of a batch before it
// writes: its size, and ids not repeated within it (the repeat is the
// item reported).
func CheckBatch(cs []Connection) error {
	if len(cs) > MaxBatch {
		return fmt.Errorf("a batch holds at most %d connections, not %d", MaxBatch, len(cs))
	}
	seen := make(map[string]struct{}, len(cs))
	for i := range cs {
		if _, ok := seen[cs[i].ID]; ok {
			return &ItemError{Index: i, ID: cs[i].ID, Err: fmt.Errorf("repeated in the batch: %w", ErrAlreadyExists)}
		}
		seen[cs[i].ID] = struct{}{}
	}
	return nil
}
