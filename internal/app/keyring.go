package app

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/tokenbroker/tokenbroker/seal"
)

// ReloadingKeyRing is the server's key ring. When it meets a ciphertext
// sealed under a key it does not know, it reloads the key file once and
// tries again: `tokenbroker keys rotate` run beside a live server adds a key
// and re-seals rows with it, and the server must read them without a
// restart.
type ReloadingKeyRing struct {
	path string
	ring atomic.Pointer[seal.KeyRing]
	mu   sync.Mutex // serializes reloads
}

// LoadKeyRing loads the key file at path, creating it with one fresh key
// when it does not exist.
func LoadKeyRing(path string) (*ReloadingKeyRing, bool, error) {
	ring, created, err := seal.LoadOrCreate(path)
	if err != nil {
		return nil, false, err
	}
	r := &ReloadingKeyRing{path: path}
	r.ring.Store(ring)
	return r, created, nil
}

// Seal seals under the primary key.
func (r *ReloadingKeyRing) Seal(plaintext, aad []byte) ([]byte, error) {
	return r.ring.Load().Seal(plaintext, aad)
}

// Open opens sealed, reloading the key file once if the key is unknown.
func (r *ReloadingKeyRing) Open(sealed, aad []byte) ([]byte, error) {
	cur := r.ring.Load()
	p, err := cur.Open(sealed, aad)
	if !errors.Is(err, seal.ErrUnknownKey) {
		return p, err
	}
	if rerr := r.reload(cur); rerr != nil {
		return nil, err
	}
	return r.ring.Load().Open(sealed, aad)
}

// Reload re-reads the key file, so that a rotated primary key is used for
// new seals.
func (r *ReloadingKeyRing) Reload() error { return r.reload(nil) }

func (r *ReloadingKeyRing) reload(seen *seal.KeyRing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seen != nil && r.ring.Load() != seen {
		return nil // another goroutine reloaded already
	}
	ring, err := seal.Load(r.path)
	if err != nil {
		return err
	}
	r.ring.Store(ring)
	return nil
}

// PrimaryID names the key new seals use.
func (r *ReloadingKeyRing) PrimaryID() string { return r.ring.Load().PrimaryID() }
