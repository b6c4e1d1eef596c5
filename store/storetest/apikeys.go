package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var apiKeyTests = []struct {
	name string
	fn   testFunc
}{
	{"CreateGet", testAPIKeyCreateGet},
	{"AlreadyExists", testAPIKeyAlreadyExists},
	{"Invalid", testAPIKeyInvalid},
	{"ListRevokeCount", testAPIKeyListRevokeCount},
}

func keyHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func sameKey(got, want store.APIKey) bool {
	return got.ID == want.ID && got.Name == want.Name && got.Scope == want.Scope &&
		bytes.Equal(got.Hash, want.Hash) && sameTime(got.CreatedAt, want.CreatedAt) &&
		sameTime(got.RevokedAt, want.RevokedAt)
}

func testAPIKeyCreateGet(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	zone := time.FixedZone("UTC-07", -7*3600)
	given := store.APIKey{
		ID: "key-given", Name: "ci pipeline", Scope: "tokens",
		Hash:      keyHash("fake-secret-1"),
		CreatedAt: time.Date(2030, time.May, 6, 7, 8, 9, 123456789, zone),
	}
	defaulted := store.APIKey{ID: "key-default", Name: "admin", Scope: "admin", Hash: keyHash("fake-secret-2")}
	for _, k := range []store.APIKey{given, defaulted} {
		if err := s.CreateAPIKey(ctx, k); err != nil {
			t.Fatalf("CreateAPIKey(%q): %v", k.ID, err)
		}
	}
	defaulted.CreatedAt = clk.Now()
	for _, want := range []store.APIKey{given, defaulted} {
		got, err := s.GetAPIKeyByHash(ctx, want.Hash)
		if err != nil {
			t.Fatalf("GetAPIKeyByHash(%q): %v", want.ID, err)
		}
		if !sameKey(got, want) {
			t.Errorf("GetAPIKeyByHash(%q): got id %q name %q scope %q created %v revoked %v; want created %v, not revoked",
				want.ID, got.ID, got.Name, got.Scope, got.CreatedAt, got.RevokedAt, want.CreatedAt)
		}
	}
	if _, err := s.GetAPIKeyByHash(ctx, keyHash("fake-unknown")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAPIKeyByHash(unknown): err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetAPIKeyByHash(ctx, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAPIKeyByHash(nil): err = %v, want ErrNotFound", err)
	}
}

func testAPIKeyAlreadyExists(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	first := store.APIKey{ID: "key-1", Name: "first", Scope: "admin", Hash: keyHash("fake-secret-1")}
	if err := s.CreateAPIKey(ctx, first); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	for _, k := range []store.APIKey{
		{ID: "key-1", Name: "same id", Scope: "tokens", Hash: keyHash("fake-secret-2")},
		{ID: "key-2", Name: "same hash", Scope: "tokens", Hash: keyHash("fake-secret-1")},
	} {
		if err := s.CreateAPIKey(ctx, k); !errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("CreateAPIKey(%s): err = %v, want ErrAlreadyExists", k.Name, err)
		}
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if len(keys) != 1 || keys[0].Name != "first" {
		t.Errorf("ListAPIKeys after duplicates: %d keys, want only the first", len(keys))
	}
}

func testAPIKeyInvalid(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		key  store.APIKey
	}{
		{"empty id", store.APIKey{Scope: "admin", Hash: keyHash("fake-a")}},
		{"no hash", store.APIKey{ID: "key-a", Scope: "admin"}},
		{"short hash", store.APIKey{ID: "key-b", Scope: "admin", Hash: keyHash("fake-b")[:16]}},
	} {
		if err := s.CreateAPIKey(ctx, tc.key); err == nil {
			t.Errorf("%s: CreateAPIKey succeeded, want an error", tc.name)
		}
	}
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 0 {
		t.Errorf("CountAPIKeys = %d, %v; want 0 after rejected creates", n, err)
	}
}

func testAPIKeyListRevokeCount(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 0 {
		t.Fatalf("CountAPIKeys on an empty store = %d, %v; want 0", n, err)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("ListAPIKeys on an empty store = %d keys, %v; want none", len(keys), err)
	}
	for _, id := range []string{"key-c", "key-a", "key-b"} {
		if err := s.CreateAPIKey(ctx, store.APIKey{ID: id, Name: id, Scope: "tokens", Hash: keyHash("fake-" + id)}); err != nil {
			t.Fatalf("CreateAPIKey(%q): %v", id, err)
		}
	}
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 3 {
		t.Fatalf("CountAPIKeys = %d, %v; want 3", n, err)
	}

	clk.Advance(time.Minute)
	revokedAt := clk.Now()
	if err := s.RevokeAPIKey(ctx, "key-b"); err != nil {
		t.Fatalf("RevokeAPIKey: %v", err)
	}
	if _, err := s.GetAPIKeyByHash(ctx, keyHash("fake-key-b")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAPIKeyByHash(revoked): err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetAPIKeyByHash(ctx, keyHash("fake-key-a")); err != nil {
		t.Errorf("GetAPIKeyByHash(other key): %v", err)
	}
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 2 {
		t.Errorf("CountAPIKeys after revoke = %d, %v; want 2", n, err)
	}
	clk.Advance(time.Minute)
	if err := s.RevokeAPIKey(ctx, "key-b"); err != nil {
		t.Errorf("second RevokeAPIKey: %v", err)
	}
	if err := s.RevokeAPIKey(ctx, "key-missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RevokeAPIKey(missing): err = %v, want ErrNotFound", err)
	}

	keys, err = s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	var gotIDs []string
	for _, k := range keys {
		gotIDs = append(gotIDs, k.ID)
		if loc := k.CreatedAt.Location(); loc != time.UTC {
			t.Errorf("%s CreatedAt location %v, want UTC", k.ID, loc)
		}
		switch k.ID {
		case "key-b":
			if !sameTime(k.RevokedAt, revokedAt) {
				t.Errorf("key-b RevokedAt = %v, want the first revocation %v", k.RevokedAt, revokedAt)
			}
		default:
			if !k.RevokedAt.IsZero() {
				t.Errorf("%s RevokedAt = %v, want zero", k.ID, k.RevokedAt)
			}
		}
		if !bytes.Equal(k.Hash, keyHash("fake-"+k.ID)) {
			t.Errorf("%s Hash does not round-trip", k.ID)
		}
	}
	if want := []string{"key-a", "key-b", "key-c"}; !slices.Equal(gotIDs, want) {
		t.Errorf("ListAPIKeys ids = %q, want %q (revoked keys included, ordered by id)", gotIDs, want)
	}
}
