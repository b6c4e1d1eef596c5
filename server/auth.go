package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// API key scopes.
const (
	// ScopeAdmin may call every route.
	ScopeAdmin = "admin"
	// ScopeTokens may read a connection's status, get its token and proxy
	// through it; nothing that creates, changes or deletes.
	ScopeTokens = "tokens"
)

// APIKeyPrefix starts every API key secret, so a leaked one is recognisable
// (and secret scanners can match it).
const APIKeyPrefix = "tbk_"

// apiKeyBytes is the secret's entropy: 256 bits.
const apiKeyBytes = 32

// maxKeyNameLen bounds an API key's name, which is shown in listings.
const maxKeyNameLen = 200

// GenerateAPIKey makes a new API key for every connection: see
// [NewAPIKey]. scope is one of [Roles].
func GenerateAPIKey(name, scope string, now time.Time) (secret string, key store.APIKey, err error) {
	return NewAPIKey(KeySpec{Name: name, Role: scope}, now)
}

// NewAPIKey makes a new API key: the secret to hand to its user once
// ("tbk_" and 32 random bytes, base64url) and the record to store, which
// keeps only the secret's SHA-256, the role and the connections it may
// touch.
func NewAPIKey(spec KeySpec, now time.Time) (secret string, key store.APIKey, err error) {
	if err := checkKeySpec(spec); err != nil {
		return "", store.APIKey{}, err
	}
	name := spec.Name
	if len(name) > maxKeyNameLen {
		return "", store.APIKey{}, fmt.Errorf("server: API key name is longer than %d bytes", maxKeyNameLen)
	}
	var raw [apiKeyBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", store.APIKey{}, fmt.Errorf("server: generate API key: %w", err)
	}
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", store.APIKey{}, fmt.Errorf("server: generate API key id: %w", err)
	}
	secret = APIKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	return secret, store.APIKey{
		ID:          hex.EncodeToString(id[:]),
		Name:        name,
		Scope:       spec.Role,
		Hash:        HashAPIKey(secret),
		CreatedAt:   now,
		Connections: slices.Clone(spec.Connections),
		Providers:   slices.Clone(spec.Providers),
	}, nil
}

// HashAPIKey returns the SHA-256 of an API key secret, the form in which
// keys are stored and looked up. A fast hash is enough: the secret has 256
// random bits, so there is nothing to brute-force.
func HashAPIKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// maxKeyLen bounds a presented key; real ones are 47 bytes.
const maxKeyLen = 256

var (
	errNoKey  = errors.New("an API key is required: Authorization: Bearer <key>")
	errBadKey = errors.New("the API key is not valid")
)

// authenticate checks the request's API key. It returns errNoKey or
// errBadKey (both 401), or the key store's error.
func (s *Server) authenticate(r *http.Request) (store.APIKey, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return store.APIKey{}, errNoKey
	}
	if len(values) > 1 {
		return store.APIKey{}, errBadKey
	}
	// RFC 7235 §2.1: the scheme is case-insensitive.
	scheme, secret, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return store.APIKey{}, errBadKey
	}
	secret = strings.TrimSpace(secret)
	if !strings.HasPrefix(secret, APIKeyPrefix) || len(secret) > maxKeyLen {
		return store.APIKey{}, errBadKey
	}
	// An array, not HashAPIKey's slice: it stays on the stack when the
	// cache answers, which is nearly every request.
	sum := sha256.Sum256([]byte(secret))
	if k, ok := s.cache.get(sum); ok {
		return k, nil
	}
	hash := sum[:]
	gen := s.cache.generation()
	k, err := s.keys.GetAPIKeyByHash(r.Context(), hash)
	if errors.Is(err, store.ErrNotFound) {
		return store.APIKey{}, errBadKey
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("server: look up API key: %w", err)
	}
	// The lookup was by hash already; comparing again in constant time
	// keeps a store that matched loosely (a prefix, a collation) from
	// letting a different key in.
	if subtle.ConstantTimeCompare(k.Hash, hash) != 1 || !k.RevokedAt.IsZero() {
		return store.APIKey{}, errBadKey
	}
	if !validRole(k.Scope) || (k.Scope == ScopeAdmin && scoped(k)) {
		s.log.WarnContext(r.Context(), "API key has an unknown scope; refusing it", "key", k.ID, "scope", k.Scope)
		return store.APIKey{}, errBadKey
	}
	k.Hash = nil // not needed past this point
	s.cache.put(sum, k, gen)
	return k, nil
}

// keyCache remembers successful key lookups for a short TTL so the hot path
// (token, proxy) does not hit the database on every call. Only successes are
// cached, so a new key works at once; a revoked one works until its entry
// expires.
type keyCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]keyCacheEntry
	gen     uint64 // bumped by clear
}

func (c *keyCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

type keyCacheEntry struct {
	key     store.APIKey
	expires time.Time
}

func newKeyCache(ttl time.Duration, max int, now func() time.Time) *keyCache {
	return &keyCache{ttl: ttl, max: max, now: now, entries: make(map[[sha256.Size]byte]keyCacheEntry)}
}

func (c *keyCache) get(k [sha256.Size]byte) (store.APIKey, bool) {
	if c == nil {
		return store.APIKey{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return store.APIKey{}, false
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, k)
		return store.APIKey{}, false
	}
	return e.key, true
}

// put caches key unless the cache was cleared since gen was read: a lookup
// that raced with a revocation must not bring the revoked key back.
func (c *keyCache) put(hash [sha256.Size]byte, key store.APIKey, gen uint64) {
	if c == nil {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.entries) >= c.max {
		for h, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, h)
			}
		}
		// Still full: drop an arbitrary entry; it costs one lookup later.
		for h := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, h)
		}
	}
	c.entries[hash] = keyCacheEntry{key: key, expires: now.Add(c.ttl)}
}

// ForgetKeys drops every cached API key lookup, so a key revoked
// elsewhere stops working at once (the app calls it from the store's key
// feed, see docs/security.md).
func (s *Server) ForgetKeys() { s.cache.clear() }

func (c *keyCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.gen++
}
