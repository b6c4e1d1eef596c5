package store

import (
	"context"
	"errors"
)

// ErrIDChanged is returned when an update function changes the id of the
// row it was given.
var ErrIDChanged = errors.New("store: update changed the connection id")

// VersionedStore is what [UpdateWithCAS] needs of a backend.
type VersionedStore interface {
	GetConnection(ctx context.Context, id string) (Connection, error)
	CompareAndSwap(ctx context.Context, c Connection) (Connection, error)
}

// UpdateWithCAS implements [Store.UpdateConnection] for a backend on its own
// GetConnection and CompareAndSwap: read the row, call update with no lock
// held, and compare-and-swap the result on the version read. It does not
// retry: a write that landed in between makes it return [ErrConflict], and
// the caller, who knows what update means, decides whether to call again.
// An error from update is returned as is and nothing is written.
func UpdateWithCAS(ctx context.Context, s VersionedStore, id string, update func(old Connection) (Connection, error)) (Connection, error) {
	old, err := s.GetConnection(ctx, id)
	if err != nil {
		return Connection{}, err
	}
	next, err := update(old)
	if err != nil {
		return Connection{}, err
	}
	if next.ID != old.ID {
		return Connection{}, ErrIDChanged
	}
	next.Version = old.Version
	return s.CompareAndSwap(ctx, next)
}
