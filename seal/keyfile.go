package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// maxKeyFileSize bounds what Load reads, so pointing it at the wrong file
// fails fast instead of reading a database into memory.
const maxKeyFileSize = 1 << 20

const newFileHeader = `# tokenbroker encryption keys: "<key-id> <base64 AES-256 key>" per line.
# The first key seals new values; every key opens old ones.
# Back this file up: without it the stored tokens cannot be decrypted.
`

// Load reads a key file. It refuses a file that group or others may read or
// write ([ErrInsecureKeyFile]) and reports a malformed line by path and line
// number, never by its content. A missing file is an error that matches
// [fs.ErrNotExist].
func Load(path string) (*KeyRing, error) {
	data, _, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return parseKeyFile(path, data)
}

// LoadOrCreate loads the key file at path, or, when there is none, creates it
// with one fresh random key: the parent directory with mode 0700 (when it
// does not exist yet) and the file with mode 0600. created reports whether
// the file was made by this call. Two processes racing to create the same
// file end up with the same key: the loser loads the winner's file.
func LoadOrCreate(path string) (k *KeyRing, created bool, err error) {
	k, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("seal: creating key directory: %w", err)
	}
	line, _, err := newKeyLine(nil)
	if err != nil {
		return nil, false, err
	}
	err = createExclusive(path, []byte(newFileHeader+line))
	if errors.Is(err, fs.ErrExist) {
		k, err = Load(path)
		return k, false, err
	}
	if err != nil {
		return nil, false, err
	}
	k, err = Load(path)
	return k, err == nil, err
}

// Rotate adds a fresh random key to the key file at path as its new primary
// and keeps the old keys, so values sealed under them still open. It returns
// the new key's id. The file is replaced atomically (temporary file, fsync,
// rename), so a crash leaves either the old file or the new one.
//
// Rotate is a maintenance operation: two Rotate calls on the same file at the
// same moment may lose one of the new keys. Running processes keep their
// loaded [KeyRing] until they load the file again.
func Rotate(path string) (newID string, err error) {
	data, perm, err := readKeyFile(path)
	if err != nil {
		return "", err
	}
	old, err := parseKeyFile(path, data)
	if err != nil {
		return "", err
	}
	line, id, err := newKeyLine(old)
	if err != nil {
		return "", err
	}
	if err := replaceFile(path, insertKeyLine(data, line), perm); err != nil {
		return "", err
	}
	return id, nil
}

// readKeyFile reads path after checking, on the open file, that only its
// owner can read or write it. It returns the file's permission bits.
func readKeyFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("seal: opening key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("seal: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("seal: key file %s is not a regular file", path)
	}
	perm := fi.Mode().Perm()
	// Windows has no Unix permission bits; its ACLs are out of our reach.
	if runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, 0, fmt.Errorf("%w: %s has mode %#o; it must be readable by its owner only (chmod 600 %s)",
			ErrInsecureKeyFile, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("seal: reading key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, 0, fmt.Errorf("seal: key file %s is larger than %d bytes; is it the right file?", path, maxKeyFileSize)
	}
	return data, perm, nil
}

// parseKeyFile parses the key file format described in the package comment.
// Its errors name path and line and never include a line's content, since
// that is key material.
func parseKeyFile(path string, data []byte) (*KeyRing, error) {
	var (
		ids  []string
		keys [][]byte
		seen = map[string]int{}
	)
	for i, line := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("seal: %s:%d: want \"<key-id> <base64 key>\", found %d fields", path, lineNo, len(fields))
		}
		id, enc := fields[0], fields[1]
		if !validKeyID(id) {
			// The id may be a key pasted in the wrong column; do not echo it.
			return nil, fmt.Errorf("seal: %s:%d: invalid key id: want 1 to %d characters from A-Z a-z 0-9 . _ -", path, lineNo, maxKeyIDLen)
		}
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("seal: %s:%d: duplicate key id %q (first on line %d)", path, lineNo, id, first)
		}
		key, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			// base64.CorruptInputError names an offset, not the data.
			return nil, fmt.Errorf("seal: %s:%d: key %q is not valid base64: %w", path, lineNo, id, err)
		}
		if len(key) != keySize {
			return nil, fmt.Errorf("seal: %s:%d: key %q is %d bytes, want %d (AES-256)", path, lineNo, id, len(key), keySize)
		}
		seen[id] = lineNo
		ids = append(ids, id)
		keys = append(keys, key)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("seal: %s: no keys", path)
	}
	return newKeyRing(ids, keys)
}

// newKeyLine makes a fresh random key and a key-file line for it, with an id
// not already in existing (which may be nil).
func newKeyLine(existing *KeyRing) (line, id string, err error) {
	for {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", "", fmt.Errorf("seal: reading random key id: %w", err)
		}
		id = "k" + hex.EncodeToString(b[:])
		if existing == nil || existing.aeads[id] == nil {
			break
		}
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return "", "", fmt.Errorf("seal: reading random key: %w", err)
	}
	return id + " " + base64.StdEncoding.EncodeToString(key) + "\n", id, nil
}

// insertKeyLine puts line before the first key line of data, so the new key
// becomes the primary and a comment header stays on top.
func insertKeyLine(data []byte, line string) []byte {
	off := 0
	for off < len(data) {
		end := bytes.IndexByte(data[off:], '\n')
		next := len(data)
		if end >= 0 {
			next = off + end + 1
		}
		t := bytes.TrimSpace(data[off:next])
		if len(t) > 0 && t[0] != '#' {
			break
		}
		off = next
	}
	out := make([]byte, 0, len(data)+len(line)+1)
	out = append(out, data[:off]...)
	if off > 0 && out[off-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, line...)
	return append(out, data[off:]...)
}

// createExclusive writes a new file at path with mode 0600, failing with an
// error matching [fs.ErrExist] if one is already there. It writes and syncs a
// temporary file first and links it into place, so no reader ever sees a
// partly written key file.
func createExclusive(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := writeTemp(dir, data, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, path)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		// Some filesystems have no hard links; an exclusive create is the
		// next best thing.
		err = writeExclusive(path, data)
	}
	if err != nil {
		return fmt.Errorf("seal: creating key file: %w", err)
	}
	return syncDir(dir)
}

func writeExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// replaceFile atomically replaces path with data.
func replaceFile(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := writeTemp(dir, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("seal: replacing key file: %w", err)
	}
	return syncDir(dir)
}

// writeTemp writes data to a new, synced temporary file in dir and returns
// its name. os.CreateTemp makes the file with mode 0600 before any key byte
// is written.
func writeTemp(dir string, data []byte, perm fs.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, ".keys-*.tmp")
	if err != nil {
		return "", fmt.Errorf("seal: writing key file: %w", err)
	}
	name := f.Name()
	_, err = f.Write(data)
	if err == nil && perm != 0o600 {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("seal: writing key file: %w", err)
	}
	return name, nil
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("seal: syncing key directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("seal: syncing key directory: %w", err)
	}
	return nil
}
