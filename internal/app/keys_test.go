package app_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/seal"
)

// startWith runs app.New on e's config, as `serve` does at start.
func (e *e2e) startWith() error {
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, app.Options{})
	if err == nil {
		a.Close()
	}
	return err
}

// TestLostKeyFileRefusesToStart: a server whose key file is missing, or
// replaced by another, beside a database of sealed tokens refuses to start
// with a message naming the file and the key ids the data needs, and never
// creates a new key file there.
func TestLostKeyFileRefusesToStart(t *testing.T) {
	e := newE2E(t)
	a, r, _ := e.authz.IssueTokens(t, "read")
	if code, body := e.do("POST", "/v1/connections", map[string]any{
		"id": "alice", "provider": "acme", "access_token": a, "refresh_token": r, "expires_in": 3600,
	}); code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	keyPath := filepath.Join(e.dir, "keys")
	ring, err := seal.Load(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	keyID := ring.PrimaryID()
	e.stop()

	saved := keyPath + ".backup"
	if err := os.Rename(keyPath, saved); err != nil {
		t.Fatal(err)
	}
	err = e.startWith()
	var kerr *app.KeyFileError
	if !errors.As(err, &kerr) || !kerr.Missing || !strings.Contains(err.Error(), keyPath) || !strings.Contains(err.Error(), keyID) {
		t.Fatalf("start without the key file: %v; want a KeyFileError naming %s and key %s", err, keyPath, keyID)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new key file was created beside sealed data")
	}

	// Another key file (a fresh one, say from another environment).
	if _, _, err := seal.LoadOrCreate(keyPath); err != nil {
		t.Fatal(err)
	}
	err = e.startWith()
	if !errors.As(err, &kerr) || kerr.Missing || kerr.Needed[keyID] != 2 {
		t.Fatalf("start with another key file: %v; want the key %s named, needed by 2 values", err, keyID)
	}

	// The right file back: the server starts and serves the token.
	if err := os.Rename(saved, keyPath); err != nil {
		t.Fatal(err)
	}
	e.start()
	if got := e.token("alice"); got != a {
		t.Fatal("after restoring the key file the token is not served")
	}
}

// TestRunningServerFollowsRotatedKeys: after `keys rotate` rewrites the key
// file, a running server seals new values under the new primary key
// without a restart or SIGHUP.
func TestRunningServerFollowsRotatedKeys(t *testing.T) {
	e := newE2E(t)
	keyPath := filepath.Join(e.dir, "keys")
	newKey, err := seal.Rotate(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	// The server notices the new file by itself (Watch), without SIGHUP.
	deadline := time.Now().Add(10 * app.KeyFileWatchInterval)
	for e.a.Keys.PrimaryID() != newKey {
		if time.Now().After(deadline) {
			t.Fatalf("the running server did not pick up the rotated key file within %v", 10*app.KeyFileWatchInterval)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a, r, _ := e.authz.IssueTokens(t, "read")
	if code, body := e.do("POST", "/v1/connections", map[string]any{
		"id": "bob", "provider": "acme", "access_token": a, "refresh_token": r, "expires_in": 3600,
	}); code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	c, err := e.a.Store.GetConnection(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.Load(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range [][]byte{c.AccessToken, c.RefreshToken} {
		if id, err := ring.KeyID(v); err != nil || id != newKey {
			t.Fatalf("a value written after the rotation is sealed under %q, want the new primary %q (%v)", id, newKey, err)
		}
	}
}

// TestScheduledRefreshIsAudited: a refresh the background scheduler makes,
// with no API call behind it, is in the audit trail as the scheduler's.
func TestScheduledRefreshIsAudited(t *testing.T) {
	e := newE2E(t)
	a, r, _ := e.authz.IssueTokens(t, "read")
	issued := e.clock.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if code, body := e.do("POST", "/v1/connections", map[string]any{
		"id": "due", "provider": "acme", "access_token": a, "refresh_token": r, "expires_in": 60, "issued_at": issued,
	}); code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := e.do("GET", "/v1/audit?connection_id=due&action=refresh", nil)
		if code != http.StatusOK {
			t.Fatalf("audit: %d %v", code, body)
		}
		entries, _ := body["entries"].([]any)
		for _, x := range entries {
			if m, _ := x.(map[string]any); m["actor"] == "scheduler" && m["outcome"] == "ok" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit entry of the scheduler's refresh after 30s: %v", entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
