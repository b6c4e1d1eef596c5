package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
)

// Sentinel errors, matched with [errors.Is].
var (
	// ErrUnknownKey means the value was sealed under a key id that is not in
	// the ring: the key file is missing a key (an old one was dropped, or this
	// replica has not seen a rotation yet).
	ErrUnknownKey = errors.New("seal: unknown key id")
	// ErrCorrupt means the value cannot be authenticated: it was changed,
	// truncated, is not a sealed value at all, or was sealed for other
	// additional data (another row or field).
	ErrCorrupt = errors.New("seal: sealed value is corrupt or belongs elsewhere")
	// ErrInsecureKeyFile means the key file can be read or written by users
	// other than its owner.
	ErrInsecureKeyFile = errors.New("seal: key file permissions too open")
)

const (
	formatVersion = 1
	keySize       = 32 // AES-256
	nonceSize     = 12 // the GCM standard nonce
	tagSize       = 16
	maxKeyIDLen   = 255 // one length byte
)

// KeyRing is a set of AES-256-GCM keys. The primary key seals; every key
// opens. A KeyRing is immutable once loaded and safe for concurrent use.
//
// Its String, GoString and LogValue methods print the key ids only, never key
// material.
type KeyRing struct {
	primary string
	ids     []string // file order, primary first
	aeads   map[string]cipher.AEAD
	// prks are HKDF-Extract outputs (RFC 5869 §2.2) of each key, from which
	// [KeyRing.DeriveKeys] expands purpose-bound keys; the raw keys are not
	// kept outside the AEADs.
	prks map[string][]byte
}

// deriveSalt separates keys derived from the ring from any other use of the
// same key material.
const deriveSalt = "tokenbroker/seal/derive/v1"

// newKeyRing builds a ring from ids and raw keys in file order. The caller has
// checked ids for syntax and duplicates and keys for length.
func newKeyRing(ids []string, keys [][]byte) (*KeyRing, error) {
	if len(ids) == 0 {
		return nil, errors.New("seal: no keys")
	}
	k := &KeyRing{primary: ids[0], ids: slices.Clone(ids), aeads: make(map[string]cipher.AEAD, len(ids)), prks: make(map[string][]byte, len(ids))}
	for i, id := range ids {
		prk, err := hkdf.Extract(sha256.New, keys[i], []byte(deriveSalt))
		if err != nil {
			return nil, fmt.Errorf("seal: key %q: %w", id, err)
		}
		k.prks[id] = prk
		block, err := aes.NewCipher(keys[i])
		if err != nil {
			// Only a wrong key length gets here, and lengths are checked; the
			// error text of crypto/aes names the length, not the key.
			return nil, fmt.Errorf("seal: key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("seal: key %q: %w", id, err)
		}
		k.aeads[id] = aead
	}
	return k, nil
}

// PrimaryID returns the id of the key that seals new values.
func (k *KeyRing) PrimaryID() string { return k.primary }

// KeyIDs returns the ids of all keys in the ring, primary first.
func (k *KeyRing) KeyIDs() []string { return slices.Clone(k.ids) }

// Seal encrypts plaintext under the primary key and binds it to aad, which
// must be passed unchanged to [KeyRing.Open]. aad is authenticated, not
// encrypted or stored: use it to name where the value lives
// ("conn:<id>:access").
func (k *KeyRing) Seal(plaintext, aad []byte) ([]byte, error) {
	if k == nil || k.primary == "" {
		return nil, errors.New("seal: empty key ring")
	}
	aead := k.aeads[k.primary]
	hdrLen := 2 + len(k.primary)
	out := make([]byte, hdrLen+nonceSize, hdrLen+nonceSize+len(plaintext)+aead.Overhead())
	out[0] = formatVersion
	out[1] = byte(len(k.primary))
	copy(out[2:], k.primary)
	nonce := out[hdrLen:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: reading random nonce: %w", err)
	}
	return aead.Seal(out, nonce, plaintext, additionalData(out[:hdrLen], aad)), nil
}

// Open authenticates and decrypts a value made by [KeyRing.Seal] with the
// same aad. It returns an error wrapping [ErrUnknownKey] (naming the key id)
// when the sealing key is not in the ring, and one wrapping [ErrCorrupt] when
// the value was altered, truncated or sealed for other aad.
func (k *KeyRing) Open(sealed, aad []byte) ([]byte, error) {
	if k == nil {
		return nil, errors.New("seal: empty key ring")
	}
	kid, hdrLen, err := parseHeader(sealed)
	if err != nil {
		return nil, err
	}
	aead, ok := k.aeads[kid]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	body := sealed[hdrLen:]
	pt, err := aead.Open(nil, body[:nonceSize], body[nonceSize:], additionalData(sealed[:hdrLen], aad))
	if err != nil {
		// crypto/cipher says only "message authentication failed"; which of
		// tampering or wrong aad it was cannot be known.
		return nil, fmt.Errorf("%w: authentication failed under key %q", ErrCorrupt, kid)
	}
	return pt, nil
}

// DeriveKeys returns one 32-byte key per key of the ring, primary first,
// derived with HKDF-SHA256 (RFC 5869) and bound to purpose and the key's
// id. Use the first to sign or MAC and accept any: after a rotation, values
// made under the old primary stay valid until its key leaves the file.
// Different purposes get unrelated keys, and none of them can open a sealed
// value.
func (k *KeyRing) DeriveKeys(purpose string) [][]byte {
	if k == nil {
		return nil
	}
	out := make([][]byte, 0, len(k.ids))
	for _, id := range k.ids {
		key, err := hkdf.Expand(sha256.New, k.prks[id], purpose+"\x00"+id, 32)
		if err != nil {
			// Only a length above 255*32 bytes fails; 32 cannot.
			panic("seal: hkdf expand: " + err.Error())
		}
		out = append(out, key)
	}
	return out
}

// KeyID returns the id of the key that sealed a value, without opening it,
// so a rotation job can find the values not sealed under the primary. It
// returns an error wrapping [ErrCorrupt] when sealed is not shaped like a
// sealed value.
func (k *KeyRing) KeyID(sealed []byte) (string, error) {
	kid, _, err := parseHeader(sealed)
	return kid, err
}

// parseHeader checks the framing of a sealed value and returns its key id and
// header length. It guarantees that a nonce and a tag follow the header.
func parseHeader(sealed []byte) (kid string, hdrLen int, err error) {
	if len(sealed) < 2 {
		return "", 0, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(sealed))
	}
	if sealed[0] != formatVersion {
		return "", 0, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, sealed[0])
	}
	n := int(sealed[1])
	hdrLen = 2 + n
	if n == 0 || len(sealed) < hdrLen+nonceSize+tagSize {
		return "", 0, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	kid = string(sealed[2:hdrLen])
	if !validKeyID(kid) {
		return "", 0, fmt.Errorf("%w: malformed key id", ErrCorrupt)
	}
	return kid, hdrLen, nil
}

// additionalData authenticates the header along with the caller's aad. The
// header is self-delimiting, so header||aad is unambiguous.
func additionalData(header, aad []byte) []byte {
	ad := make([]byte, 0, len(header)+len(aad))
	return append(append(ad, header...), aad...)
}

// validKeyID reports whether id is a usable key id: 1 to 255 characters from
// [A-Za-z0-9._-], so it survives the key file's whitespace-separated format
// and error messages without quoting surprises.
func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > maxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// String describes the ring by its key ids.
func (k *KeyRing) String() string {
	if k == nil {
		return "seal.KeyRing(nil)"
	}
	return "seal.KeyRing{primary=" + k.primary + " keys=" + strconv.Itoa(len(k.ids)) + "}"
}

// GoString keeps %#v from printing the ring's internals.
func (k *KeyRing) GoString() string { return k.String() }

// LogValue implements [slog.LogValuer] with the key ids only.
func (k *KeyRing) LogValue() slog.Value {
	if k == nil {
		return slog.StringValue("nil")
	}
	return slog.GroupValue(
		slog.String("primary", k.primary),
		slog.Int("keys", len(k.ids)),
	)
}
