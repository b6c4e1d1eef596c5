package broker

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// tokenCache keeps recently handed-out access tokens so that a valid token
// costs no database round trip. An entry is only ever served before the
// token is due (its due time comes from package lifecycle when it is
// cached), and it is dropped on every write this process makes to the
// connection.
//
// Writes by other processes are the hard part. With a shared database the
// cache is trusted only while a [store.ChangeFeed] is delivering every
// change: each notice drops the entry, and while the feed is down the cache
// is off and empty. The window left is the notice's own latency (the
// notice is sent when the writer commits); in that moment a replica may
// still hand out the previous token, which was valid when cached and which
// providers that keep old access tokens alive still accept; the proxy
// refreshes and replays on a provider's stale-token answer either way.
//
// Races between a read and an invalidation are settled by an epoch: a
// value read from the store is cached only if no invalidation happened
// since the read began, so a stale row can never be cached after the write
// that replaced it was announced.
type tokenCache struct {
	mu      sync.Mutex
	entries map[string]cachedToken
	max     int
	epoch   uint64
	enabled bool
}

type cachedToken struct {
	token Token
	due   time.Time // when token must no longer be served from here
}

// newTokenCache returns a cache of at most size tokens; with size zero it
// caches nothing but still keeps the epoch, which shared reads need
// (readConnection).
func newTokenCache(size int, enabled bool) *tokenCache {
	return &tokenCache{entries: make(map[string]cachedToken, min(max(size, 0), 1024)), max: size, enabled: enabled}
}

// get returns id's token if it is cached and not yet due.
func (c *tokenCache) get(id string, now time.Time) (Token, bool) {
	if c == nil {
		return Token{}, false
	}
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if !ok || !now.Before(e.due) {
		return Token{}, false
	}
	return e.token, true
}

// begin returns the epoch to hand to put after reading from the store,
// and whether the cache is trusted now (enabled: every write is heard of).
func (c *tokenCache) begin() (epoch uint64, trusted bool) {
	if c == nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.enabled
}

// put caches a token read at epoch until due, unless something was
// invalidated since. Tokens of unknown expiry (zero due) are not cached:
// nothing would ever expire them.
func (c *tokenCache) put(id string, t Token, due time.Time, epoch uint64) {
	if c == nil || c.max <= 0 || due.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.enabled || c.epoch != epoch {
		return
	}
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		for k := range c.entries { // evict an arbitrary entry
			delete(c.entries, k)
			break
		}
	}
	c.entries[id] = cachedToken{token: t, due: due}
}

// invalidate drops id's entry.
func (c *tokenCache) invalidate(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.epoch++
	delete(c.entries, id)
	c.mu.Unlock()
}

// setEnabled turns the cache on or off; either way it starts empty.
func (c *tokenCache) setEnabled(on bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.epoch++
	c.enabled = on
	clear(c.entries)
	c.mu.Unlock()
}

// readConnection reads connection id for a token read that missed the
// cache. Concurrent misses of one id share one store read, as long as no
// write was heard of since it began (the cache's epoch, trusted under the
// same conditions as the cache itself): a caller never gets a row older
// than the last write announced before it arrived. Without this, a storm
// of callers on an expired token queued one read each on the database
// pool, ahead of the one refresh they all wait for.
func (b *Broker) readConnection(ctx context.Context, id string) (store.Connection, uint64, error) {
	epoch, trusted := b.cache.begin()
	if !trusted {
		c, err := b.store.GetConnection(ctx, id)
		return c, epoch, err
	}
	key := id + "\x00" + strconv.FormatUint(epoch, 10)
	ch := b.reads.DoChan(key, func() (any, error) {
		// Detached, so that the first caller leaving does not fail the
		// others; bounded like any store call.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
		defer cancel()
		return b.store.GetConnection(rctx, id)
	})
	select {
	case <-ctx.Done():
		return store.Connection{}, epoch, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return store.Connection{}, epoch, r.Err
		}
		// Shared: the callers only read the row (its byte slices included).
		return r.Val.(store.Connection), epoch, nil
	}
}

// ConnectionChanged, ChangesFollowed and ChangesLost make the broker a
// [store.ChangeHandler] for the store's change feed.
func (b *Broker) ConnectionChanged(id string) { b.written(id) }
func (b *Broker) ChangesFollowed()            { b.cache.setEnabled(true) }
func (b *Broker) ChangesLost()                { b.cache.setEnabled(false) }
