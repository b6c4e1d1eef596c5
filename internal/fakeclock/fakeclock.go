// Package fakeclock holds the clocks tests inject wherever tokenbroker
// takes a Now func, so that tokens expire and backoffs pass without
// waiting. Both are safe for concurrent use.
package fakeclock

import (
	"sync"
	"sync/atomic"
	"time"
)

// Clock reads a fixed time until advanced.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock that reads start until advanced.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Offset is the wall clock shifted by however far it was advanced. Tests
// use it where real time must keep flowing too: lease polling, or peers
// (fosite) that read the wall clock themselves.
type Offset struct{ offset atomic.Int64 }

// Now returns the wall clock plus the offset.
func (c *Offset) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *Offset) Advance(d time.Duration) { c.offset.Add(int64(d)) }
