package store

import (
	"context"
	"errors"
)

// ErrIDChanged is returned when an update function changes the id of the
// row it was given.
var ErrIDChanged = errors.New("store: update changed the connection id")

// Updater computes a connection's next row from the stored one, and the
// lifecycle events the change causes (queued with the write). It may return
// an error to abort without writing. It may be called more than once (see
// [Update]), so it must not have effects beyond its return values.
type Updater func(old Connection) (Connection, []Event, error)

// VersionedStore is what [UpdateWithCAS] and [Update] need of a backend.
type VersionedStore interface {
	GetConnection(ctx context.Context, id string) (Connection, error)
	CompareAndSwap(ctx context.Context, c Connection, events ...Event) (Connection, error)
}

// MaxUpdateAttempts bounds [Update]'s retries. Each lost race means another
// write landed in between; a handful is plenty for one connection's writers
// (a refresh, a failure record, an operator's edit), and a bound keeps a
// pathological writer from pinning a caller forever.
const MaxUpdateAttempts = 5

// UpdateWithCAS implements [Store.UpdateConnection] for a backend on its own
// GetConnection and CompareAndSwap: read the row, call update with no lock
// held, and compare-and-swap the result on the incarnation and version
// read. It does not retry: a write that landed in between makes it return
// [ErrConflict]. An error from update is returned as is and nothing is
// written.
func UpdateWithCAS(ctx context.Context, s VersionedStore, id string, update Updater) (Connection, error) {
	old, err := s.GetConnection(ctx, id)
	if err != nil {
		return Connection{}, err
	}
	return swapFrom(ctx, s, old, update)
}

// swapFrom applies update to old and compare-and-swaps the result on old's
// incarnation and version.
func swapFrom(ctx context.Context, s VersionedStore, old Connection, update Updater) (Connection, error) {
	next, events, err := update(old)
	if err != nil {
		return Connection{}, err
	}
	if next.ID != old.ID {
		return Connection{}, ErrIDChanged
	}
	next.Version, next.Incarnation = old.Version, old.Incarnation
	return s.CompareAndSwap(ctx, next, events...)
}

// Update is the read-modify-write every caller uses: [UpdateWithCAS],
// called again on ErrConflict up to MaxUpdateAttempts times, each time on
// the newly stored row. The last ErrConflict is returned when every attempt
// lost.
func Update(ctx context.Context, s VersionedStore, id string, update Updater) (Connection, error) {
	var (
		c   Connection
		err error
	)
	for range MaxUpdateAttempts {
		c, err = UpdateWithCAS(ctx, s, id, update)
		if !errors.Is(err, ErrConflict) {
			break
		}
	}
	return c, err
}

// UpdateFrom is [Update] for a caller that already holds the current row,
// known (read under the refresh lease, which no other refresh writes
// under): the first attempt applies update to known and compare-and-swaps
// it on known's incarnation and version without reading the row again.
// Only when that loses does it fall back to Update's read-modify-write. It
// saves a round trip on the refresh's critical path, where every waiting
// caller pays for each one.
func UpdateFrom(ctx context.Context, s VersionedStore, known Connection, update Updater) (Connection, error) {
	c, err := swapFrom(ctx, s, known, update)
	if !errors.Is(err, ErrConflict) {
		return c, err
	}
	return Update(ctx, s, known.ID, update)
}
