package client

import (
	"context"
	"fmt"
	"time"
)

// minBackgroundGap keeps the background loop from spinning on a provider
// that hands out tokens already inside the refresh window.
const minBackgroundGap = time.Second

// StartBackground refreshes the token ahead of expiry, when
// [lifecycle.Policy.NextRefresh] says: shortly before it becomes due, with a
// random jitter of up to a quarter of the window (so many sources do not
// hit a provider in step), and retries transient failures with backoff. It stops when ctx is done, when the source goes
// terminal, or on [TokenSource.Close], which waits for it. A token with no
// known expiry is refreshed only when an API rejects it.
//
// Calling StartBackground again, or after Close, does nothing.
func (s *TokenSource) StartBackground(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return
	}
	s.started = true
	// Close cancels the loop's own context, so the loop stops even while
	// it waits for a refresh (which carries on, detached, for its callers).
	ctx, s.stopBg = context.WithCancel(ctx)
	s.wg.Add(1)
	go s.background(ctx)
}

func (s *TokenSource) background(ctx context.Context) {
	defer s.wg.Done()
	var last time.Time // last attempt
	for {
		s.mu.Lock()
		st, changed, retryAt := s.cur.Load(), s.changed, s.retryAt
		s.mu.Unlock()
		if st.err != nil {
			return
		}

		now := s.now()
		m := modeAhead
		var at time.Time // zero: wait for a change
		switch {
		case !canRefresh(st.tok, now):
			// Nothing to refresh with. Once the access token is gone, let
			// the source go terminal now so OnFailure fires without waiting
			// for a caller.
			m = modeToken
			if !st.usable(now) {
				at = now
			} else if !st.tok.Expiry.IsZero() {
				at = st.tok.Expiry
			}
		case st.invalid:
			at = now
		case !st.refreshAt.IsZero():
			// The schedule's time, as the server's scheduler computes it.
			g := grantOf(st.tok)
			at = s.policy.NextRefresh(&g, s.rand())
		}
		if !at.IsZero() {
			if at.Before(retryAt) {
				at = retryAt
			}
			if next := last.Add(minBackgroundGap); at.Before(next) {
				at = next
			}
		}

		var timer <-chan time.Time
		stop := func() bool { return false }
		if !at.IsZero() {
			t := time.NewTimer(at.Sub(now))
			timer, stop = t.C, t.Stop
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-changed:
			stop()
			continue
		case <-timer:
		}
		last = s.now()
		// The outcome is in the state the next iteration reads; errors are
		// already logged by the refresh.
		_, _ = s.acquire(ctx, m, st.tok)
	}
}

// Close stops the background refresh and the save retries and waits for
// them. If a token could not be saved, Close tries once more and returns
// that error. The source still answers Token afterwards; a Save failing then
// is retried before the next refresh. Close is idempotent.
func (s *TokenSource) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		if s.stopBg != nil {
			s.stopBg()
		}
		s.mu.Unlock()
		s.saveMu.Lock()
		s.saveClosed = true
		s.saveMu.Unlock()
		close(s.done)
		s.wg.Wait()
		if err := s.flushPending(context.Background()); err != nil {
			s.saveFailed(err)
			s.closeErr = fmt.Errorf("client: newest token not saved: %w", err)
		}
	})
	return s.closeErr
}
