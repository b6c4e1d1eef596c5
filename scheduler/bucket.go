package scheduler

import (
	"sync"
	"time"
)

// bucket is a token bucket (rate tokens per second, up to burst) on an
// injected clock. Unlike a blocking limiter it hands out reservations: the
// caller learns how long to wait and may give the token back, which lets a
// whole claimed batch be scheduled at once in due order.
type bucket struct {
	mu    sync.Mutex
	rate  float64 // tokens per second; <= 0: unlimited
	burst float64
	// tokens is the bucket's level at time at; at may lie in the future
	// after a pause, and tokens below zero are reservations not yet due.
	tokens float64
	at     time.Time
	// pausedUntil: the provider asked us to wait (Retry-After).
	pausedUntil time.Time
}

func newBucket(rate float64, burst int, now time.Time) *bucket {
	if burst < 1 {
		burst = 1
	}
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), at: now}
}

// reserve takes one token and returns how long after now the call it pays
// for may start. A reservation that would wait longer than limit is not
// taken; ok is false.
func (b *bucket) reserve(now time.Time, limit time.Duration) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		wait = max(b.pausedUntil.Sub(now), 0)
		return wait, wait <= limit
	}
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+b.rate*now.Sub(b.at).Seconds())
		b.at = now
	}
	start := b.at
	if b.tokens < 1 {
		start = start.Add(time.Duration((1 - b.tokens) / b.rate * float64(time.Second)))
	}
	wait = max(start.Sub(now), 0)
	if wait > limit {
		return wait, false
	}
	b.tokens--
	return wait, true
}

// pause stops calls until until. The bucket restarts with one token then,
// so the first call after a pause probes whether the provider recovered.
func (b *bucket) pause(now, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
	if b.rate > 0 && until.After(b.at) {
		if now.After(b.at) {
			b.tokens = min(b.burst, b.tokens+b.rate*now.Sub(b.at).Seconds())
		}
		// Reservations already handed out stay counted (a negative level).
		b.tokens, b.at = min(b.tokens, 1), until
	}
}

// paused reports whether calls must still wait for a pause to end.
func (b *bucket) paused(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return now.Before(b.pausedUntil)
}
