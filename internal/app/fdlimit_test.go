package app

import (
	"log/slog"
	"testing"

	"github.com/tokenbroker/tokenbroker/config"
)

// TestMaxConnectionsBelowFDLimit: a connection cap above the open-file
// limit is lowered below it, so a flood cannot use up the descriptors.
func TestMaxConnectionsBelowFDLimit(t *testing.T) {
	lim := fdLimit()
	if lim == 0 {
		t.Skip("no open-file limit on this platform")
	}
	a := &App{Config: &config.Config{Security: config.SecurityConfig{MaxConnections: lim + 1000}}, log: slog.New(slog.DiscardHandler)}
	if n := a.maxConnections(); n >= lim || n <= 0 {
		t.Errorf("maxConnections = %d with an open-file limit of %d", n, lim)
	}
	a.Config.Security.MaxConnections = 10
	if n := a.maxConnections(); n != 10 {
		t.Errorf("a cap well below the limit was changed to %d", n)
	}
}
