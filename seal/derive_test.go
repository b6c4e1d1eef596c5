package seal

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestDeriveKeys: derived keys are stable across loads of the same file,
// differ by purpose and by key, and after a rotation the old primary's key
// is still offered (second) so values made under it stay verifiable.
func TestDeriveKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	k1, _, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b := k1.DeriveKeys("ui-session"), again.DeriveKeys("ui-session")
	if len(a) != 1 || len(a[0]) != 32 || !bytes.Equal(a[0], b[0]) {
		t.Fatalf("same file, same purpose: %d keys, equal %v", len(a), len(b) == 1 && bytes.Equal(a[0], b[0]))
	}
	if other := k1.DeriveKeys("something-else"); bytes.Equal(other[0], a[0]) {
		t.Error("two purposes derived the same key")
	}
	if _, err := Rotate(path); err != nil {
		t.Fatal(err)
	}
	k2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rotated := k2.DeriveKeys("ui-session")
	if len(rotated) != 2 {
		t.Fatalf("after rotation: %d derived keys, want 2", len(rotated))
	}
	if bytes.Equal(rotated[0], a[0]) || !bytes.Equal(rotated[1], a[0]) {
		t.Error("after rotation the new primary must derive a new first key and the old key must come second")
	}
	var nilRing *KeyRing
	if nilRing.DeriveKeys("x") != nil {
		t.Error("a nil ring derived keys")
	}
}
