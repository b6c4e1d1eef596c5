package broker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"

	"github.com/tokenbroker/tokenbroker/internal/wait"
)

// Lease waits poll the row with backoff between these bounds. The winner's
// provider call takes tens to hundreds of milliseconds, so a loser notices
// the new token soon after it is written without hammering the database.
const (
	leasePollMin = 5 * time.Millisecond
	leasePollMax = 250 * time.Millisecond
)

// acquireLease takes the connection's refresh lease (step 3). It returns the
// row read under the lease, or nil when, while it waited, the holder wrote a
// token this caller can use instead of refreshing again.
//
// The lease is taken under owner, which names this flight, not just this
// process: flights of different kinds for one connection can run in one
// process at once (a caller's, the scheduler's, a proxy's after a 401), and
// a lease shared by the process would let two of them spend one refresh
// token.
func (b *Broker) acquireLease(ctx context.Context, id, owner string, reason lifecycle.Reason, stale *string) (*store.Connection, error) {
	delay := leasePollMin
	for {
		c, err := b.store.AcquireLease(ctx, id, owner, b.leaseTTL)
		if err == nil {
			return &c, nil
		}
		if !errors.Is(err, store.ErrLeaseHeld) {
			return nil, err
		}
		// Someone else is refreshing. Wait for their write or for their
		// lease to lapse (a replica that died holding it), never calling
		// the provider while it is live.
		waitStart := time.Now()
		defer func() { b.metrics.LeaseWaited(c.Provider, time.Since(waitStart)) }()
		seen := c.Version
		for {
			if err := wait.Sleep(ctx, delay); err != nil {
				return nil, err
			}
			delay = min(delay*3/2, leasePollMax)
			cur, err := b.store.GetConnection(ctx, id)
			if err != nil {
				return nil, err
			}
			if cur.Version != seen {
				p, perr := b.provider(&cur)
				if perr != nil {
					return nil, perr
				}
				// The holder wrote. A successful refresh that finished while
				// we waited answers a forced flight too: its token is as new
				// as ours would be.
				if reason == lifecycle.Forced && cur.Status == store.StatusActive && cur.Failure == nil {
					return nil, nil
				}
				if b.serves(&cur, p, reason, stale, b.now()) {
					return nil, nil
				}
				g := grantOf(&cur)
				if err := lifecycle.ErrorOf(&g, b.now()); err != nil {
					return nil, err
				}
				seen = cur.Version
			}
			if cur.LeaseOwner == "" || !b.now().Before(cur.LeaseUntil) {
				break // free or lapsed: try to take it
			}
		}
	}
}

// renewLease extends the lease every third of its TTL until stopped, so a
// slow provider call does not let another replica start a second refresh.
func (b *Broker) renewLease(ctx context.Context, id, owner string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(b.leaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := b.store.AcquireLease(ctx, id, owner, b.leaseTTL); err != nil {
					b.log.WarnContext(ctx, "could not renew refresh lease", "connection", id, "error", err)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (b *Broker) releaseLease(id, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.store.ReleaseLease(ctx, id, owner); err != nil {
		// The lease lapses by itself after its TTL.
		b.log.WarnContext(ctx, "could not release refresh lease", "connection", id, "error", err)
	}
}

// flightOwner names one refresh flight in leases: the broker's owner (the
// replica) and a sequence number.
func (b *Broker) flightOwner() string {
	return b.owner + "/" + strconv.FormatUint(b.flightSeq.Add(1), 10)
}
