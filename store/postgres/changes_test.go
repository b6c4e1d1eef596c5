package postgres

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// TestKeyFeedAnnouncesEveryRevocationAfterLost holds FollowKeyChanges to
// its contract: lost is called once the LISTEN is in place, and every
// revocation committed after that call is announced by id. A replica that
// cached a key before its feed was listening relies on that first call to
// drop it; without it, a revocation in that window stays unannounced for as
// long as the connection lives.
func TestKeyFeedAnnouncesEveryRevocationAfterLost(t *testing.T) {
	s, _ := openFresh(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	lost := make(chan struct{}, 16)
	changed := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.FollowKeyChanges(ctx, func(id string) { changed <- id }, func() { lost <- struct{}{} })
	}()
	defer func() { cancel(); <-done }()

	select {
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("lost was never called once the feed was listening")
	}
	hash := sha256.Sum256([]byte("fake-key"))
	k := store.APIKey{ID: "key-revoked", Name: "ci", Scope: "admin", Hash: hash[:]}
	if err := s.CreateAPIKey(t.Context(), k); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	if err := s.RevokeAPIKey(t.Context(), k.ID); err != nil {
		t.Fatalf("RevokeAPIKey: %v", err)
	}
	for {
		select {
		case id := <-changed:
			if id == k.ID {
				return
			}
		case <-lost:
			t.Fatal("the feed lost its connection; the test cannot tell whether the notice was sent")
		case <-time.After(30 * time.Second):
			t.Fatal("the revocation was never announced")
		}
	}
}
