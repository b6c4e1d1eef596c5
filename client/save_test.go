package client

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

var errStorageDown = errors.New("fake storage down")

// fakeStore is a Save callback whose storage can be taken down.
type fakeStore struct {
	down     atomic.Bool
	mu       sync.Mutex
	attempts []string // access tokens, every Save call
	saved    []string // access tokens, successful Save calls in order
}

func (f *fakeStore) Save(ctx context.Context, tok *oauth.Token) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, tok.AccessToken)
	if f.down.Load() {
		return errStorageDown
	}
	f.saved = append(f.saved, tok.AccessToken)
	return nil
}

func (f *fakeStore) savedTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.saved)
}

func (f *fakeStore) attemptCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.attempts)
}

// A failed Save keeps the new token in use, reports the failure, and is
// retried with backoff until it succeeds.
func TestSaveFailureKeepsTokenAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeStore{}
		store.down.Store(true)
		var saveErrs counter
		s := mustSource(t, Config{
			Refresher:   &fakeRefresher{},
			Token:       initial(time.Now(), -time.Second),
			Save:        store.Save,
			OnSaveError: saveErrs.record,
		})

		got, err := s.Token(context.Background())
		if err != nil || got.AccessToken != "fake-access-1" {
			t.Fatalf("Token = %v, %v; want the new token despite the failed Save", got, err)
		}
		synctest.Wait() // the failure is reported once the token is in use
		if saveErrs.count() != 1 || !errors.Is(saveErrs.at(0), errStorageDown) {
			t.Fatalf("OnSaveError calls = %d, want 1 wrapping the Save error", saveErrs.count())
		}

		time.Sleep(1500 * time.Millisecond) // first retry after 1s, still down
		synctest.Wait()
		if n := store.attemptCount(); n != 2 {
			t.Fatalf("Save attempts after 1.5s = %d, want 2", n)
		}
		store.down.Store(false)
		time.Sleep(3 * time.Second) // next retry 2s after the first
		synctest.Wait()
		if got := store.savedTokens(); !slices.Equal(got, []string{"fake-access-1"}) {
			t.Fatalf("saved %d tokens, want exactly the new one", len(got))
		}
		time.Sleep(time.Hour)
		if n := store.attemptCount(); n != 3 {
			t.Errorf("Save attempts = %d, want no more after success", n)
		}
		if n := saveErrs.count(); n != 2 {
			t.Errorf("OnSaveError calls = %d, want 2", n)
		}
	})
}

// Storage never goes back to an older token, whoever saves it.
func TestSaveOrdering(t *testing.T) {
	tests := []struct {
		name string
		// run drives the source; store is down at the start.
		run  func(t *testing.T, s *TokenSource, store *fakeStore)
		want []string
	}{
		{
			// The old token is saved right before the next refresh spends
			// its refresh token, then the new one.
			name: "pending saved before the next refresh",
			run: func(t *testing.T, s *TokenSource, store *fakeStore) {
				mustRefresh(t, s) // fake-access-1, Save fails
				store.down.Store(false)
				mustRefresh(t, s) // saves 1, then 2
			},
			want: []string{"fake-access-1", "fake-access-2"},
		},
		{
			// Both fail; only the newest is retried.
			name: "newest pending replaces older",
			run: func(t *testing.T, s *TokenSource, store *fakeStore) {
				mustRefresh(t, s)
				mustRefresh(t, s)
				store.down.Store(false)
				time.Sleep(time.Hour)
			},
			want: []string{"fake-access-2"},
		},
		{
			// The retrier saves 1; then 2 is saved by its refresh; the
			// retrier does not come back with 1.
			name: "retrier then refresh",
			run: func(t *testing.T, s *TokenSource, store *fakeStore) {
				mustRefresh(t, s)
				store.down.Store(false)
				time.Sleep(2 * time.Second)
				mustRefresh(t, s)
				time.Sleep(time.Hour)
			},
			want: []string{"fake-access-1", "fake-access-2"},
		},
		{
			// 2 is saved by its refresh while 1 waits for its retry: 1 is
			// never written after 2.
			name: "refresh overtakes the retrier",
			run: func(t *testing.T, s *TokenSource, store *fakeStore) {
				mustRefresh(t, s)
				store.down.Store(false)
				// Direct persist of a newer token without the pre-refresh
				// flush: simulates the retrier losing the race.
				s.persist(context.Background(), &oauth.Token{AccessToken: "fake-access-9"})
				time.Sleep(time.Hour)
			},
			want: []string{"fake-access-9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := &fakeStore{}
				store.down.Store(true)
				s := mustSource(t, Config{Refresher: &fakeRefresher{}, Token: initial(time.Now(), time.Hour), Save: store.Save})
				tt.run(t, s, store)
				synctest.Wait()
				if got := store.savedTokens(); !slices.Equal(got, tt.want) {
					// Generations, not token values, in the test output.
					t.Errorf("saved tokens of generations %v, want %v", generations(got), generations(tt.want))
				}
			})
		})
	}
}

func mustRefresh(t *testing.T, s *TokenSource) {
	t.Helper()
	if _, err := s.Refresh(context.Background(), nil); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}

// Close makes a last attempt at a pending Save and reports its failure.
func TestCloseFlushesPendingSave(t *testing.T) {
	for _, downAtClose := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			store := &fakeStore{}
			store.down.Store(true)
			s, err := NewTokenSource(Config{Refresher: &fakeRefresher{}, Token: initial(time.Now(), time.Hour), Save: store.Save})
			if err != nil {
				t.Fatal(err)
			}
			mustRefresh(t, s)
			store.down.Store(downAtClose)

			err = s.Close()
			if downAtClose != errors.Is(err, errStorageDown) {
				t.Errorf("down at close %v: Close = %v", downAtClose, err)
			}
			wantSaved := map[bool]int{false: 1, true: 0}[downAtClose]
			if n := len(store.savedTokens()); n != wantSaved {
				t.Errorf("down at close %v: saved %d tokens, want %d", downAtClose, n, wantSaved)
			}
			if err2 := s.Close(); err2 != err {
				t.Errorf("second Close = %v, want the first result", err2)
			}
		})
	}
}

// OnSaveError runs once the new token is in use, so it may call Token.
func TestOnSaveErrorMayCallToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeStore{}
		store.down.Store(true)
		var s *TokenSource
		var inner atomic.Pointer[oauth.Token]
		s = mustSource(t, Config{
			Refresher: &fakeRefresher{},
			Token:     initial(time.Now(), -time.Second),
			Save:      store.Save,
			OnSaveError: func(error) {
				if tok, err := s.Token(context.Background()); err == nil {
					inner.Store(tok)
				}
			},
		})
		if _, err := s.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if tok := inner.Load(); tok == nil || tok.AccessToken != "fake-access-1" {
			t.Error("Token called from OnSaveError did not return the new token")
		}
	})
}

// generations maps fake access tokens "fake-access-N" to N.
func generations(toks []string) []string {
	out := make([]string, len(toks))
	for i, tok := range toks {
		out[i] = strings.TrimPrefix(tok, "fake-access-")
	}
	return out
}
