package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
)

// TestSchedulerWiring: the app builds a scheduler that claims under the
// broker's owner name, and none when the config disables it; the broker
// learns each provider's refresh-token idle timeout for keep-alives.
func TestSchedulerWiring(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		enabled bool
	}{
		{"default", "", true},
		{"disabled", "scheduler:\n  disabled: true\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("SCHED_ACME_SECRET", "fake-secret")
			yaml := fmt.Sprintf(`data_dir: %[1]s
providers:
  - name: acme
    token_url: http://127.0.0.1:1/token
    client_id: fake-client
    client_secret_env: SCHED_ACME_SECRET
    token_rate_limit: 5
    refresh_idle_timeout: 720h
%[2]s`, dir, tc.extra)
			path := filepath.Join(dir, "tokenbroker.yaml")
			if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			a, err := app.New(context.Background(), cfg, app.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if got := a.Scheduler != nil; got != tc.enabled {
				t.Fatalf("scheduler built: %v, want %v", got, tc.enabled)
			}
			if p, _ := a.Broker.Provider("acme"); p.Policy.RefreshIdleTimeout != 720*time.Hour {
				t.Errorf("broker provider RefreshIdleTimeout = %v, want the profile's 720h", p.Policy.RefreshIdleTimeout)
			}
			if tc.enabled && a.Scheduler.Owner() != a.Broker.Owner() {
				t.Errorf("scheduler owner %q, broker owner %q; want the same", a.Scheduler.Owner(), a.Broker.Owner())
			}
		})
	}
}
