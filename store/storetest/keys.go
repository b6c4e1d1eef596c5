package storetest

import (
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var keyTests = []struct {
	name string
	fn   testFunc
}{
	{"SealedKeyIDs", testSealedKeyIDs},
}

// sealedUnder is a value shaped like package seal's output under key id.
func sealedUnder(id string) []byte {
	b := append([]byte{1, byte(len(id))}, id...)
	return append(b, make([]byte, 12+16+5)...) // nonce, tag, ciphertext
}

// testSealedKeyIDs: the key ids sealed values name are counted across
// access tokens, refresh tokens and connect-session verifiers; values that
// are not shaped like sealed values are not.
func testSealedKeyIDs(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	if got, err := s.SealedKeyIDs(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	a := minimalConnection("conn-a")
	a.AccessToken, a.RefreshToken = sealedUnder("k-old"), sealedUnder("k-new")
	mustCreate(t, s, a)
	b := minimalConnection("conn-b")
	b.AccessToken = sealedUnder("k-new")
	mustCreate(t, s, b)
	c := minimalConnection("conn-c") // not shaped like a sealed value
	c.AccessToken = []byte{1}
	mustCreate(t, s, c)
	long := "k-0123456789012345678901234567890123456789012345678901234567890123456789"
	d := minimalConnection("conn-d")
	d.AccessToken = sealedUnder(long)
	mustCreate(t, s, d)
	if err := s.CreateConnectSession(ctx, store.ConnectSession{ID: "session-1", ConnectionID: "conn-e", Provider: "acme",
		ExpiresAt: clk.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginConnectSession(ctx, "session-1", []byte("state-hash-1"), sealedUnder("k-old")); err != nil {
		t.Fatal(err)
	}
	got, err := s.SealedKeyIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"k-old": 2, "k-new": 2, long: 1}
	if len(got) != len(want) {
		t.Fatalf("SealedKeyIDs = %v, want %v", got, want)
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("SealedKeyIDs[%q] = %d, want %d (all: %v)", id, got[id], n, got)
		}
	}
}
