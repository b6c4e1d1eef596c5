package app_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
)

// TestUnknownProviderWithNoneConfigured: a server started without
// providers answers an import for "github" by saying that none are
// configured and where they come from; the MCP pseudo-provider that MCP
// connections use is not offered as one.
func TestUnknownProviderWithNoneConfigured(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{DataDir: dir, Database: "sqlite:" + filepath.Join(dir, "tb.db")}
	cfg.SetDefaults()
	a, err := app.New(context.Background(), cfg, app.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = a.Broker.CreateConnection(context.Background(), broker.Import{ID: "x", Provider: "github", AccessToken: "fake-access"})
	if err == nil || !strings.Contains(err.Error(), "no providers are configured") || strings.Contains(err.Error(), "mcp") {
		t.Fatalf("import with no providers configured: %v", err)
	}
}
