package broker

import "testing"

// TestWakers: a channel taken before a write is closed by it; one taken
// after is not; other connections' waiters are not woken.
func TestWakers(t *testing.T) {
	var w wakers
	before, other := w.on("c1"), w.on("c2")
	if w.on("c1") != before {
		t.Fatal("two waiters of one connection got different channels")
	}
	w.wake("c1")
	select {
	case <-before:
	default:
		t.Fatal("a write did not wake the waiter that took its channel before")
	}
	select {
	case <-other:
		t.Fatal("a write woke another connection's waiter")
	default:
	}
	after := w.on("c1")
	select {
	case <-after:
		t.Fatal("a channel taken after the write is already closed")
	default:
	}
	w.wake("c3") // nobody waits: a no-op
}
