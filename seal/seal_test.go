package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fakeKey returns an obviously fake but valid 32-byte key whose base64 form is
// easy to search for in error strings.
func fakeKey(fill byte) []byte { return bytes.Repeat([]byte{fill}, keySize) }

func b64(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// writeKeyFile writes content to a fresh 0600 file and returns its path.
func writeKeyFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t *testing.T, path string) *KeyRing {
	t.Helper()
	k, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return k
}

// twoKeyRing has primary "k2" and an older "k1".
func twoKeyRing(t *testing.T) *KeyRing {
	t.Helper()
	return mustLoad(t, writeKeyFile(t, "# test keys\nk2 "+b64(fakeKey(2))+"\nk1 "+b64(fakeKey(1))+"\n"))
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := twoKeyRing(t)
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"empty", nil, []byte("conn:a:access")},
		{"token", bytes.Repeat([]byte("x"), 200), []byte("conn:a:access")},
		{"binary", []byte{0, 1, 2, 0xff, 0xfe}, nil},
		{"large", bytes.Repeat([]byte("y"), 1<<16), []byte("conn:b:refresh")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed, err := k.Seal(tt.plaintext, tt.aad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(tt.plaintext) > 4 && bytes.Contains(sealed, tt.plaintext) {
				t.Error("sealed value contains the plaintext")
			}
			if want := 2 + len("k2") + nonceSize + len(tt.plaintext) + tagSize; len(sealed) != want {
				t.Errorf("sealed length = %d, want %d", len(sealed), want)
			}
			if sealed[0] != formatVersion || int(sealed[1]) != len("k2") || string(sealed[2:4]) != "k2" {
				t.Errorf("header = %v, want version 1, kid k2", sealed[:4])
			}
			got, err := k.Open(sealed, tt.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open returned %d bytes that differ from the %d sealed", len(got), len(tt.plaintext))
			}
		})
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	k := twoKeyRing(t)
	a, err := k.Seal([]byte("same"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal([]byte("same"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Error("sealing the same value twice gave identical ciphertexts")
	}
}

func TestOpenTamperedByteIsCorrupt(t *testing.T) {
	k := twoKeyRing(t)
	aad := []byte("conn:a:access")
	sealed, err := k.Seal([]byte("fake-access-token-value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	hdrLen := 2 + len(k.PrimaryID())
	for i := range sealed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(sealed)
			bad[i] ^= mask
			_, err := k.Open(bad, aad)
			switch {
			case err == nil:
				t.Fatalf("byte %d ^ %#x: Open succeeded on a tampered value", i, mask)
			case i < hdrLen:
				// A changed key id is indistinguishable from a key we lack.
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownKey) {
					t.Errorf("header byte %d ^ %#x: err = %v, want ErrCorrupt or ErrUnknownKey", i, mask, err)
				}
			default:
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("byte %d ^ %#x: err = %v, want ErrCorrupt", i, mask, err)
				}
			}
		}
	}
}

func TestOpenTruncatedOrExtendedIsCorrupt(t *testing.T) {
	k := twoKeyRing(t)
	sealed, err := k.Seal([]byte("fake-refresh-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(sealed); n++ {
		if _, err := k.Open(sealed[:n], nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d bytes: err = %v, want ErrCorrupt", n, err)
		}
		if _, err := k.KeyID(sealed[:n]); n < 2+len("k2")+nonceSize+tagSize && !errors.Is(err, ErrCorrupt) {
			t.Errorf("KeyID of %d bytes: err = %v, want ErrCorrupt", n, err)
		}
	}
	if _, err := k.Open(append(bytes.Clone(sealed), 0), nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("extended by a byte: err = %v, want ErrCorrupt", err)
	}
}

func TestOpenWrongAADIsCorrupt(t *testing.T) {
	k := twoKeyRing(t)
	sealed, err := k.Seal([]byte("fake-access-token"), []byte("conn:alice:access"))
	if err != nil {
		t.Fatal(err)
	}
	for _, aad := range []string{"conn:bob:access", "conn:alice:refresh", "conn:alice:access ", "", "conn:alice:acces"} {
		if _, err := k.Open(sealed, []byte(aad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("aad %q: err = %v, want ErrCorrupt (a value copied to another row must not open)", aad, err)
		}
	}
	if _, err := k.Open(sealed, []byte("conn:alice:access")); err != nil {
		t.Errorf("right aad: %v", err)
	}
}

func TestOpenUnknownKey(t *testing.T) {
	a := mustLoad(t, writeKeyFile(t, "alpha "+b64(fakeKey(0xaa))+"\n"))
	b := mustLoad(t, writeKeyFile(t, "beta "+b64(fakeKey(0xbb))+"\n"))
	sealed, err := a.Seal([]byte("fake-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Open(sealed, nil)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
	if !strings.Contains(err.Error(), `"alpha"`) {
		t.Errorf("error %q does not name the key id", err)
	}
	assertNoKeyMaterial(t, err.Error(), fakeKey(0xaa), fakeKey(0xbb))

	// Same id, other key material: the value does not authenticate.
	impostor := mustLoad(t, writeKeyFile(t, "alpha "+b64(fakeKey(0xcc))+"\n"))
	if _, err := impostor.Open(sealed, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("same id, other key: err = %v, want ErrCorrupt", err)
	}
}

func TestOpenUnknownVersionIsCorrupt(t *testing.T) {
	k := twoKeyRing(t)
	sealed, err := k.Seal([]byte("v"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed[0] = 2
	if _, err := k.Open(sealed, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("err = %v, want ErrCorrupt", err)
	}
}

func TestKeyID(t *testing.T) {
	k := twoKeyRing(t)
	sealed, err := k.Seal([]byte("v"), nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := k.KeyID(sealed)
	if err != nil || id != "k2" {
		t.Errorf("KeyID = %q, %v; want k2", id, err)
	}
	if _, err := k.KeyID([]byte("plaintext that was never sealed")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("KeyID of garbage: err = %v, want ErrCorrupt", err)
	}
	if got := k.KeyIDs(); len(got) != 2 || got[0] != "k2" || got[1] != "k1" {
		t.Errorf("KeyIDs = %v, want [k2 k1]", got)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "keys")

	k1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	if runtime.GOOS != "windows" {
		assertMode(t, dir, 0o700)
		assertMode(t, path, 0o600)
	}
	sealed, err := k1.Seal([]byte("fake-token"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}

	k2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	if k2.PrimaryID() != k1.PrimaryID() {
		t.Errorf("primary changed from %q to %q on reload", k1.PrimaryID(), k2.PrimaryID())
	}
	if _, err := k2.Open(sealed, []byte("aad")); err != nil {
		t.Errorf("reloaded ring cannot open: %v", err)
	}
	if !validKeyID(k1.PrimaryID()) {
		t.Errorf("generated key id %q is not a valid id", k1.PrimaryID())
	}
}

func TestLoadOrCreateKeepsGarbledFile(t *testing.T) {
	path := writeKeyFile(t, "k1 not-base64!\n")
	if _, _, err := LoadOrCreate(path); err == nil {
		t.Fatal("LoadOrCreate accepted a garbled key file")
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "k1 not-base64!\n" {
		t.Errorf("LoadOrCreate rewrote an existing key file")
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want fs.ErrNotExist naming %s", err, path)
	}
}

func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	k1, _, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	oldID := k1.PrimaryID()
	aad := []byte("conn:a:refresh")
	oldSealed, err := k1.Seal([]byte("fake-old-token"), aad)
	if err != nil {
		t.Fatal(err)
	}

	newID, err := Rotate(path)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if newID == oldID || !validKeyID(newID) {
		t.Fatalf("Rotate returned id %q (old %q)", newID, oldID)
	}
	if runtime.GOOS != "windows" {
		assertMode(t, path, 0o600)
	}
	k2 := mustLoad(t, path)
	if k2.PrimaryID() != newID {
		t.Errorf("primary after rotation = %q, want %q", k2.PrimaryID(), newID)
	}
	if got := k2.KeyIDs(); len(got) != 2 || got[1] != oldID {
		t.Errorf("KeyIDs after rotation = %v, want [%s %s]", got, newID, oldID)
	}
	got, err := k2.Open(oldSealed, aad)
	if err != nil || string(got) != "fake-old-token" {
		t.Errorf("old ciphertext after rotation: err = %v, match = %v", err, string(got) == "fake-old-token")
	}
	if id, _ := k2.KeyID(oldSealed); id != oldID {
		t.Errorf("KeyID(old) = %q, want %q", id, oldID)
	}
	newSealed, err := k2.Seal([]byte("fake-new-token"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := k2.KeyID(newSealed); id != newID {
		t.Errorf("KeyID(new) = %q, want new primary %q", id, newID)
	}
	// The ring loaded before the rotation has never seen the new key.
	if _, err := k1.Open(newSealed, aad); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("stale ring opening new value: err = %v, want ErrUnknownKey", err)
	}

	// A second rotation keeps all three, newest first, and the header comment
	// stays on top.
	thirdID, err := Rotate(path)
	if err != nil {
		t.Fatal(err)
	}
	k3 := mustLoad(t, path)
	if got := k3.KeyIDs(); len(got) != 3 || got[0] != thirdID || got[1] != newID || got[2] != oldID {
		t.Errorf("KeyIDs after two rotations = %v", got)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "#") {
		t.Error("rotation moved the header comment below a key")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("key directory holds %d entries after rotation, want only the key file", len(entries))
	}
}

func TestInsertKeyLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a 1\n", "new\na 1\n"},
		{"# c\n\na 1\nb 2\n", "# c\n\nnew\na 1\nb 2\n"},
		{"# only comment", "# only comment\nnew\n"},
		{"", "new\n"},
	}
	for _, tt := range tests {
		if got := string(insertKeyLine([]byte(tt.in), "new\n")); got != tt.want {
			t.Errorf("insertKeyLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestKeyFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits")
	}
	for _, mode := range []fs.FileMode{0o640, 0o604, 0o660, 0o644, 0o606} {
		t.Run(fmt.Sprintf("%#o", mode), func(t *testing.T) {
			content := "k1 " + b64(fakeKey(1)) + "\n"
			path := writeKeyFile(t, content)
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			for name, call := range map[string]func() error{
				"Load":         func() error { _, err := Load(path); return err },
				"LoadOrCreate": func() error { _, _, err := LoadOrCreate(path); return err },
				"Rotate":       func() error { _, err := Rotate(path); return err },
			} {
				err := call()
				if !errors.Is(err, ErrInsecureKeyFile) {
					t.Errorf("%s: err = %v, want ErrInsecureKeyFile", name, err)
					continue
				}
				if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("%#o", mode)) {
					t.Errorf("%s: error %q does not name the path and mode", name, msg)
				}
				assertNoKeyMaterial(t, err.Error(), fakeKey(1))
			}
			if data, _ := os.ReadFile(path); string(data) != content {
				t.Error("an insecure key file was rewritten")
			}
		})
	}
	for _, mode := range []fs.FileMode{0o600, 0o400} {
		path := writeKeyFile(t, "k1 "+b64(fakeKey(1))+"\n")
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err != nil {
			t.Errorf("mode %#o: %v", mode, err)
		}
	}
}

func TestGarbledKeyFile(t *testing.T) {
	good := b64(fakeKey(7))
	short := b64(fakeKey(9)[:16])
	// A key with one character broken: close to real key material.
	broken := "!" + good[1:]
	tests := []struct {
		name    string
		content string
		want    string // substring, after the path
	}{
		{"bad base64", "# keys\nk1 " + good + "\n\nk2 " + broken + "\n", ":4: key \"k2\" is not valid base64"},
		{"wrong length", "k1 " + short + "\n", ":1: key \"k1\" is 16 bytes, want 32"},
		{"duplicate id", "k1 " + good + "\nk2 " + good + "\nk1 " + good + "\n", ":3: duplicate key id \"k1\" (first on line 1)"},
		{"missing key", "k1 " + good + "\nk2\n", ":2: want \"<key-id> <base64 key>\", found 1 fields"},
		{"extra field", "k1 " + good + " extra\n", ":1: want \"<key-id> <base64 key>\", found 3 fields"},
		{"key in id column", good + " " + good + "\n", ":1: invalid key id"},
		{"no keys", "# nothing here\n\n", ": no keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeKeyFile(t, tt.content)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load accepted a garbled key file")
			}
			if !strings.Contains(err.Error(), path+tt.want) {
				t.Errorf("error %q does not contain %q", err, path+tt.want)
			}
			assertNoKeyMaterial(t, err.Error(), fakeKey(7), fakeKey(9)[:16])
			if strings.Contains(err.Error(), broken) || strings.Contains(err.Error(), broken[1:20]) {
				t.Error("error contains the broken key text")
			}
		})
	}
}

func TestStringHidesKeys(t *testing.T) {
	k := twoKeyRing(t)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("ring", "ring", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v", k, k, k), fmt.Sprintf("%+v", *k), logged.String()} {
		assertNoKeyMaterial(t, s, fakeKey(1), fakeKey(2))
	}
	if !strings.Contains(k.String(), "k2") || !strings.Contains(logged.String(), `"primary":"k2"`) {
		t.Errorf("String/LogValue do not name the primary: %q / %q", k.String(), logged.String())
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	k := twoKeyRing(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			aad := fmt.Appendf(nil, "conn:%d:access", g)
			for i := range 200 {
				pt := fmt.Appendf(nil, "fake-token-%d-%d", g, i)
				sealed, err := k.Seal(pt, aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := k.Open(sealed, aad)
				if err != nil || !bytes.Equal(got, pt) {
					errs <- fmt.Errorf("goroutine %d round %d: open failed or mismatched (err %v)", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// assertNoKeyMaterial fails if s contains any of keys, raw or in base64 (or a
// long stretch of it).
func assertNoKeyMaterial(t *testing.T, s string, keys ...[]byte) {
	t.Helper()
	for _, key := range keys {
		enc := b64(key)
		if strings.Contains(s, string(key)) || strings.Contains(s, enc) || strings.Contains(s, enc[:16]) {
			t.Errorf("output contains key material")
		}
	}
}

func assertMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %#o, want %#o", path, got, want)
	}
}

func BenchmarkSeal(b *testing.B) {
	k := benchRing(b)
	token := bytes.Repeat([]byte("t"), 200)
	aad := []byte("conn:bench:access")
	b.ReportAllocs()
	b.SetBytes(int64(len(token)))
	for b.Loop() {
		if _, err := k.Seal(token, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k := benchRing(b)
	aad := []byte("conn:bench:access")
	sealed, err := k.Seal(bytes.Repeat([]byte("t"), 200), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(200)
	for b.Loop() {
		if _, err := k.Open(sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRing(b *testing.B) *KeyRing {
	b.Helper()
	path := filepath.Join(b.TempDir(), "keys")
	k, _, err := LoadOrCreate(path)
	if err != nil {
		b.Fatal(err)
	}
	return k
}
