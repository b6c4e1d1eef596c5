// Package wait holds the one way tokenbroker sleeps: for a duration or until
// the context is done, whichever comes first.
package wait

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx is done. It returns ctx.Err() when the
// context ended first (or had already ended), nil otherwise.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
