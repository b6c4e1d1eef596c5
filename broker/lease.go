package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// Lease waits poll the row with backoff between these bounds. The winner's
// provider call takes tens to hundreds of milliseconds, so a loser notices
// the new token soon after it is written without hammering the database.
const (
	leasePollMin = 5 * time.Millisecond
	leasePollMax = 250 * time.Millisecond
)

// lease is a refresh lease this flight holds, and the latest moment it is
// known to hold it until: a provider call must end before then (minus
// LeaseMargin), or another replica could take the lease and spend the same
// refresh token.
type lease struct {
	id, owner string
	until     time.Time // wall clock; see fencedContext
}

// acquireLease takes the connection's refresh lease (step 3) for a flight
// with reason. It returns the row read under the lease, or, with a nil
// lease, the row the holder wrote while it waited when that row's token
// serves this caller instead of a refresh of its own.
//
// The lease is taken under owner, which names this flight, not just this
// process: flights of different kinds for one connection can run in one
// process at once (a caller's, the scheduler's, a proxy's after a 401), and
// a lease shared by the process would let two of them spend one refresh
// token.
func (b *Broker) acquireLease(ctx context.Context, id, owner string, reason lifecycle.Reason, stale *string) (*store.Connection, *lease, error) {
	return b.takeLease(ctx, id, owner, func(cur *store.Connection) (bool, error) {
		p, err := b.provider(cur)
		if err != nil {
			return false, err
		}
		// The holder wrote. A successful refresh that finished while we
		// waited answers a forced flight too: its token is as new as ours
		// would be.
		if reason == lifecycle.Forced && cur.Status == store.StatusActive && cur.Failure == nil {
			return true, nil
		}
		if b.serves(cur, p, reason, stale, b.now()) {
			return true, nil
		}
		g := grantOf(cur)
		return false, lifecycle.ErrorOf(&g, b.now())
	})
}

// takeLease takes the connection's lease under owner, waiting while another
// owner holds it. Each time the holder writes, answered decides whether the
// waiter's purpose is served by what was written (true: return that row
// and a nil lease) or has failed (an error); a nil answered waits for the
// lease whatever is written. A lease whose holder died is taken once it
// lapses.
func (b *Broker) takeLease(ctx context.Context, id, owner string, answered func(*store.Connection) (bool, error)) (*store.Connection, *lease, error) {
	delay := leasePollMin
	var (
		waited   time.Duration
		provider string
	)
	defer func() {
		if waited > 0 {
			b.metrics.LeaseWaited(provider, waited) // once per flight, however many rounds
			b.leaseWaitSpan(ctx, id, waited)        // tracing.go
		}
	}()
	for {
		// The lease lapses ttl after the store's now at the UPDATE, which is
		// after this moment: fencing from here is on the safe side.
		taken := time.Now()
		c, err := b.store.AcquireLease(ctx, id, owner, b.leaseTTL)
		if err == nil {
			return &c, &lease{id: id, owner: owner, until: taken.Add(b.leaseTTL)}, nil
		}
		if !errors.Is(err, store.ErrLeaseHeld) {
			return nil, nil, err
		}
		// Someone else holds it. Wait for their write or for their lease
		// to lapse (a replica that died holding it), never calling the
		// provider while it is live.
		provider = c.Provider
		waitStart := time.Now()
		seen := c.Version
		woken := b.wakers.on(id)
		for {
			if err := b.waitWrite(ctx, woken, delay); err != nil {
				waited += time.Since(waitStart)
				return nil, nil, err
			}
			delay = min(delay*3/2, leasePollMax)
			woken = b.wakers.on(id) // before the read: a later write closes it
			cur, err := b.store.GetConnection(ctx, id)
			if err != nil {
				waited += time.Since(waitStart)
				return nil, nil, err
			}
			if cur.Version != seen && answered != nil {
				done, err := answered(&cur)
				if err != nil {
					waited += time.Since(waitStart)
					return nil, nil, err
				}
				if done {
					waited += time.Since(waitStart)
					return &cur, nil, nil
				}
				seen = cur.Version
			}
			if cur.LeaseOwner == "" || !b.now().Before(cur.LeaseUntil) {
				break // free or lapsed: try to take it
			}
		}
		waited += time.Since(waitStart)
	}
}

// waitWrite waits until the holder's write wakes the waiter (woken), or
// delay passes, whichever is first.
func (b *Broker) waitWrite(ctx context.Context, woken <-chan struct{}, delay time.Duration) error {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-woken:
	case <-t.C:
	}
	return nil
}

// LeaseMargin is how much sooner than its lease a provider call must end:
// a fifth of the lease's TTL, at most 5 seconds. It leaves room for the
// replicas' clocks to disagree and for the write after the call.
func LeaseMargin(ttl time.Duration) time.Duration { return min(5*time.Second, ttl/5) }

// MinLeaseTTL is the shortest lease the broker accepts.
const MinLeaseTTL = time.Second

// CheckLeaseTiming reports why a refresh timeout and a lease TTL cannot
// work together, or nil. A provider call must always end before the lease
// that protects it could lapse: otherwise another replica may take the
// lease while the call is in flight and send the same refresh token again,
// which a rotating provider answers by revoking the grant.
func CheckLeaseTiming(timeout, ttl time.Duration) error {
	switch {
	case ttl < MinLeaseTTL:
		return fmt.Errorf("lease TTL %v is shorter than the minimum %v", ttl, MinLeaseTTL)
	case timeout <= 0:
		return fmt.Errorf("refresh timeout %v is not positive", timeout)
	case timeout+LeaseMargin(ttl) >= ttl:
		return fmt.Errorf("lease TTL %v must exceed the refresh timeout %v by more than %v, so that a provider call always ends before its lease could lapse",
			ttl, timeout, LeaseMargin(ttl))
	}
	return nil
}

// fencedContext bounds a provider call made under l: it ends at the refresh
// timeout, and always LeaseMargin before the lease could lapse.
func (b *Broker) fencedContext(ctx context.Context, l *lease) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(b.timeout)
	if fence := l.until.Add(-LeaseMargin(b.leaseTTL)); fence.Before(deadline) {
		deadline = fence
	}
	return context.WithDeadline(ctx, deadline)
}

// renewLease extends the lease every third of its TTL until stopped, so the
// write after a slow provider call still happens under it. A renewal that
// fails leaves the lease uncertain: it is logged as an error; the provider
// call itself is fenced by the lease it started under (fencedContext), and
// its answer is saved by compare-and-swap either way, so a newer token
// written by another holder is never overwritten.
func (b *Broker) renewLease(ctx context.Context, l *lease) (stop func()) {
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
				if _, err := b.store.AcquireLease(ctx, l.id, l.owner, b.leaseTTL); err != nil {
					b.log.ErrorContext(ctx, "could not renew the refresh lease; the provider call is fenced by the lease it started under and its answer is saved by compare-and-swap",
						"connection", l.id, "error", err)
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
