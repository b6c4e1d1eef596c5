package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
)

// KeyFileFreshness bounds how stale the server's copy of the key file may
// be when it seals a value: a write checks the file at most this long
// after the last check, so that after `tokenbroker keys rotate` every
// replica seals under the new primary key within this long (the command
// waits longer than this before it re-seals stored rows).
const KeyFileFreshness = 50 * time.Millisecond

// ReloadingKeyRing is the server's key ring. It follows the key file: a
// write checks that the file is unchanged (at most KeyFileFreshness after
// the last check) and reloads it if not, so new values are sealed under the
// current primary key; Watch polls it for idle servers; and a ciphertext
// sealed under a key the ring does not know makes it reload the file once
// and try again.
type ReloadingKeyRing struct {
	path string
	log  *slog.Logger
	ring atomic.Pointer[seal.KeyRing]

	mu      sync.Mutex // serializes reloads; guards stamp
	stamp   fileStamp
	checked atomic.Int64 // unix nanoseconds of the last look at the file
}

// fileStamp identifies a version of the key file: seal.Rotate replaces the
// file, so a new version has a new inode, size or modification time.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(fi fs.FileInfo) fileStamp {
	return fileStamp{mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
}

// LoadKeyRing loads the key file at path, creating it with one fresh key
// when it does not exist. OpenKeyRing is the server's way in: it refuses to
// create one beside sealed data.
func LoadKeyRing(path string) (*ReloadingKeyRing, bool, error) {
	ring, created, err := seal.LoadOrCreate(path)
	if err != nil {
		return nil, false, err
	}
	r := &ReloadingKeyRing{path: path, log: slog.New(slog.DiscardHandler)}
	r.ring.Store(ring)
	if fi, err := os.Stat(path); err == nil {
		r.stamp = stampOf(fi)
	}
	r.checked.Store(time.Now().UnixNano())
	return r, created, nil
}

// KeyFileError is why a server cannot start with its key file: it is
// missing, or lacks keys, while the database holds values sealed under
// them. Starting anyway would fail every token read, and would seal new
// values under a key the old data does not share, stranding one or the
// other.
type KeyFileError struct {
	Path    string
	Missing bool             // the file does not exist
	Needed  map[string]int64 // key id -> sealed values the file cannot open
}

func (e *KeyFileError) Error() string {
	ids := make([]string, 0, len(e.Needed))
	var n int64
	for id, c := range e.Needed {
		ids = append(ids, id)
		n += c
	}
	slices.Sort(ids)
	what := "does not have"
	if e.Missing {
		what = "does not exist, and so does not have"
	}
	return fmt.Sprintf("encryption_keys_file %s %s the key(s) %s that %d sealed value(s) in the database need. "+
		"Restore the key file from your backup, or point encryption_keys_file at the right one; "+
		"tokenbroker never creates a new key file beside sealed data", e.Path, what, strings.Join(ids, ", "), n)
}

// OpenKeyRing opens the server's key ring at path and checks it against
// what the database holds: it returns a *KeyFileError when stored values
// are sealed under keys the file does not have, or when the file is missing
// and the database holds any sealed value. Only a database with nothing
// sealed gets a new key file (created reports it).
func OpenKeyRing(ctx context.Context, path string, data store.SealedKeys, log *slog.Logger) (r *ReloadingKeyRing, created bool, err error) {
	used, err := data.SealedKeyIDs(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("checking which encryption keys the database needs: %w", err)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && len(used) > 0 {
		return nil, false, &KeyFileError{Path: path, Missing: true, Needed: used}
	}
	r, created, err = LoadKeyRing(path)
	if err != nil {
		return nil, false, err
	}
	r.log = log
	have := r.ring.Load().KeyIDs()
	missing := map[string]int64{}
	for id, n := range used {
		if !slices.Contains(have, id) {
			missing[id] = n
		}
	}
	if len(missing) > 0 {
		return nil, false, &KeyFileError{Path: path, Needed: missing}
	}
	return r, created, nil
}

// Seal seals under the primary key of the current key file.
func (r *ReloadingKeyRing) Seal(plaintext, aad []byte) ([]byte, error) {
	r.follow(false)
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

// Watch looks at the key file every interval until ctx ends, reloading it
// when it changed: a replica picks up a rotated key without a restart even
// when it writes nothing.
func (r *ReloadingKeyRing) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.follow(true)
		}
	}
}

// follow reloads the key file if it changed since it was loaded. Unless
// force is set, it looks at the file at most once per KeyFileFreshness.
func (r *ReloadingKeyRing) follow(force bool) {
	now := time.Now().UnixNano()
	last := r.checked.Load()
	if !force && now-last < int64(KeyFileFreshness) {
		return
	}
	if !r.checked.CompareAndSwap(last, now) && !force {
		return // another writer is looking
	}
	fi, err := os.Stat(r.path)
	if err != nil {
		r.log.Error("cannot read the encryption key file; still using the keys loaded before", "path", r.path, "error", err)
		return
	}
	r.mu.Lock()
	same := stampOf(fi) == r.stamp
	r.mu.Unlock()
	if same {
		return
	}
	if err := r.reload(nil); err != nil {
		r.log.Error("cannot reload the changed encryption key file; still using the keys loaded before", "path", r.path, "error", err)
		return
	}
	r.log.Info("encryption key file changed; reloaded", "path", r.path, "primary_key", r.PrimaryID())
}

func (r *ReloadingKeyRing) reload(seen *seal.KeyRing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seen != nil && r.ring.Load() != seen {
		return nil // another goroutine reloaded already
	}
	fi, err := os.Stat(r.path)
	if err != nil {
		return err
	}
	ring, err := seal.Load(r.path)
	if err != nil {
		return err
	}
	r.ring.Store(ring)
	r.stamp = stampOf(fi)
	return nil
}

// PrimaryID names the key new seals use.
func (r *ReloadingKeyRing) PrimaryID() string { return r.ring.Load().PrimaryID() }
