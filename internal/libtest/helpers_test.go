package libtest

import (
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/client"
)

func mustSource(t testing.TB, cfg client.Config) *client.TokenSource {
	t.Helper()
	s, err := client.NewTokenSource(cfg)
	if err != nil {
		t.Fatalf("NewTokenSource: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// counter counts calls of a callback.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) record(error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
