package oauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Backoff defaults, used for zero fields of [Backoff].
const (
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	DefaultMaxAttempts = 3
)

// maxBackoffShift is where doubling stops: from here on Base·2^attempt
// exceeds every Duration, so the cap is Max.
const maxBackoffShift = 63

// Backoff says how often and how patiently an [Endpoint] retries a transient
// failure. Zero fields take the defaults: Base 250ms, Max 10s, 3 attempts.
type Backoff struct {
	// Base is the upper bound of the first retry's delay; each further retry
	// doubles it.
	Base time.Duration
	// Max caps every delay. A provider asking (with Retry-After) to wait
	// longer than Max gets its error returned at once instead, so that the
	// caller can schedule the retry rather than hold a goroutine for it.
	Max time.Duration
	// MaxAttempts is the total number of requests for one call, the first
	// included. 1 disables retries.
	MaxAttempts int
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = DefaultBackoffBase
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = DefaultMaxAttempts
	}
	return b
}

func (b Backoff) validate() error {
	switch {
	case b.Base < 0:
		return fmt.Errorf("oauth: config: Retry.Base %v is negative", b.Base)
	case b.Max < 0:
		return fmt.Errorf("oauth: config: Retry.Max %v is negative", b.Max)
	case b.MaxAttempts < 0:
		return fmt.Errorf("oauth: config: Retry.MaxAttempts %d is negative", b.MaxAttempts)
	}
	return nil
}

// Delay returns how long to wait before retry number attempt (0 for the wait
// after the first failure), given rnd drawn uniformly from [0, 1).
//
// It is exponential backoff with full jitter ("Exponential Backoff And
// Jitter", AWS Architecture Blog, 2015): uniform in
// [0, min(Max, Base·2^attempt)). Full jitter spreads the retries of many
// connections that failed together (a provider outage) instead of having
// them return in waves. Large attempt numbers saturate at Max rather than
// overflow.
func (b Backoff) Delay(attempt int, rnd float64) time.Duration {
	b = b.withDefaults()
	limit := b.Max
	if attempt < 0 {
		attempt = 0
	}
	if attempt < maxBackoffShift {
		if d := b.Base << uint(attempt); d>>uint(attempt) == b.Base && d < limit {
			limit = d
		}
	}
	switch {
	case !(rnd > 0): // also catches NaN
		return 0
	case rnd >= 1:
		return limit - 1
	}
	d := time.Duration(math.Floor(rnd * float64(limit)))
	if d >= limit { // float rounding at the top of the range
		d = limit - 1
	}
	return d
}

// retryable reports whether trying the same request again may get a
// different answer and is safe: no answer at all, a garbled success, 408,
// 429 or 5xx. A refresh whose outcome is unknown is not retried here: at a
// provider that revokes a refresh token once used, sending it again may
// revoke the whole grant, and only the caller knows the provider's rotation
// (package lifecycle decides).
// Other 4xx answers are returned as they are even when their Kind is
// transient (invalid_request, say): the same request earns the same answer,
// and whether to try again later is the caller's policy. A 401 in particular
// is the provider's verdict on the client, never a reason to ask again.
func retryable(e *Error) bool {
	if e.Kind != KindTransient || (e.OutcomeUnknown && e.Op == "refresh") {
		return false
	}
	switch s := e.StatusCode; {
	case s == 0:
		return true
	case s == 408, s == 429, s >= 500:
		return true
	case s < 400:
		return e.Code == CodeInvalidResponse
	}
	return false
}

// withRetry calls try until it succeeds, fails for good, or the retry budget
// is spent, sleeping [Backoff.Delay] between attempts and at least as long as
// the provider's Retry-After.
//
// A refresh whose request may have reached the provider (its answer was
// lost: a reset connection, a 502 or 504 from a gateway) is not retried:
// it is returned with OutcomeUnknown set, and the caller, who knows whether
// the provider revokes a used refresh token, decides (package lifecycle).
func (e *Endpoint) withRetry(ctx context.Context, op string, try func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return NetworkError(op, err)
		}
		err := try(ctx)
		if err == nil {
			return nil
		}
		var oe *Error
		if !errors.As(err, &oe) || !retryable(oe) || attempt+1 >= e.retry.MaxAttempts || ctx.Err() != nil {
			return err
		}
		delay := e.retry.Delay(attempt, e.rand())
		if oe.RetryAfter > 0 {
			if oe.RetryAfter > e.retry.Max {
				return err
			}
			delay = max(delay, oe.RetryAfter)
		}
		// Context deadlines are wall-clock times, whatever clock is injected.
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= delay {
			return err
		}
		e.log.DebugContext(ctx, "oauth: retrying after transient failure",
			"op", op, "attempt", attempt+1, "status", oe.StatusCode, "code", oe.Code, "delay", delay)
		if serr := e.sleep(ctx, delay); serr != nil {
			return interrupted(oe, serr)
		}
	}
}

// interrupted reports a retry abandoned because the wait was cut short: the
// last failure's fields, with the interruption (a context error) as cause so
// that errors.Is(err, context.Canceled) holds.
func interrupted(last *Error, cause error) *Error {
	e := *last
	e.Kind = KindTransient
	if last.Err != nil {
		e.Err = fmt.Errorf("%w (retry abandoned; last failure: %w)", cause, last.Err)
	} else {
		e.Err = fmt.Errorf("%w (retry abandoned)", cause)
	}
	return &e
}

// sleep waits for d or until ctx is done, returning ctx.Err() when the
// context ended first. It is the server's internal/wait.Sleep: the library
// module cannot import the server's internal packages (docs/library.md,
// "Modules").
func sleep(ctx context.Context, d time.Duration) error {
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
