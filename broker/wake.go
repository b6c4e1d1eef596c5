package broker

import "sync"

// wakers lets refresh flights waiting for another holder's lease wake when
// that holder writes, instead of only at their next poll: the losers of a
// refresh storm get the winner's token as soon as it is committed. A write
// by this process wakes them directly (written); one by another replica
// wakes them through the store's change feed (ConnectionChanged). Polling
// stays as the fallback, so a missed notice costs at most one poll.
type wakers struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

// on returns a channel that is closed at id's next write. Take it before
// reading the row: a write after the read then closes a channel already
// held.
func (w *wakers) on(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(map[string]chan struct{})
	}
	c, ok := w.ch[id]
	if !ok {
		c = make(chan struct{})
		w.ch[id] = c
	}
	return c
}

// wake closes id's channel, if anyone took one.
func (w *wakers) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.ch[id]; ok {
		close(c)
		delete(w.ch, id)
	}
}

// written records that this process wrote connection id: its cached token
// is dropped and the flights waiting for its lease are woken.
func (b *Broker) written(id string) {
	b.cache.invalidate(id)
	b.wakers.wake(id)
}
