package client

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Save retries back off from saveRetryMin to saveRetryMax.
const (
	saveRetryMin = time.Second
	saveRetryMax = time.Minute
)

// persist saves tok, a token no caller has seen yet. On failure tok becomes
// the pending token and a retrier is started; tok is used regardless.
//
// Every Save happens under saveMu, and pending is only ever replaced by a
// newer token (refreshes run one at a time), so storage never goes back to
// an older token.
func (s *TokenSource) persist(ctx context.Context, tok *oauth.Token) error {
	if s.save == nil {
		return nil
	}
	s.saveMu.Lock()
	err := s.callSave(ctx, tok)
	if err != nil {
		s.pending = tok
		if !s.retrying && !s.saveClosed {
			s.retrying = true
			s.wg.Add(1)
			go s.retrySaves()
		}
	} else {
		s.pending = nil // tok supersedes any older unsaved token
	}
	s.saveMu.Unlock()
	return err
}

// flushPending tries once to save the pending token, if any.
func (s *TokenSource) flushPending(ctx context.Context) error {
	if s.save == nil {
		return nil
	}
	s.saveMu.Lock()
	var err error
	if s.pending != nil {
		if err = s.callSave(ctx, s.pending); err == nil {
			s.pending = nil
		}
	}
	s.saveMu.Unlock()
	return err
}

// callSave runs Save with its own timeout. saveMu must be held; the caller
// reports a failure with saveFailed once it has let go of saveMu.
func (s *TokenSource) callSave(ctx context.Context, tok *oauth.Token) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.save(ctx, tok); err != nil {
		return fmt.Errorf("client: save token: %w", err)
	}
	return nil
}

// saveFailed reports a failed Save to the logger and OnSaveError.
func (s *TokenSource) saveFailed(err error) {
	s.log.LogAttrs(context.Background(), slog.LevelError,
		"client: saving the new token failed; it is kept in memory and saving will be retried",
		slog.String("error", err.Error()))
	if s.onSaveError != nil {
		s.onSaveError(err)
	}
}

// retrySaves saves the pending token with backoff until that succeeds, a
// newer token is saved, or Close is called (Close then tries once more).
func (s *TokenSource) retrySaves() {
	defer s.wg.Done()
	delay := saveRetryMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-s.done:
			t.Stop()
			s.saveMu.Lock()
			s.retrying = false
			s.saveMu.Unlock()
			return
		case <-t.C:
		}
		s.saveMu.Lock()
		if s.pending == nil {
			s.retrying = false
			s.saveMu.Unlock()
			return
		}
		err := s.callSave(context.Background(), s.pending)
		if err == nil {
			s.pending = nil
			s.retrying = false
			s.saveMu.Unlock()
			return
		}
		s.saveMu.Unlock()
		s.saveFailed(err)
		delay = min(delay*2, saveRetryMax)
	}
}
