package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func runSecCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

var keyLine = regexp.MustCompile(`^tbk_[A-Za-z0-9_-]{43}\n$`)

// TestCLIScopedKeysAndAudit: apikey create takes --connections and
// --providers, prints the key alone, and key changes land in the audit
// trail that `tokenbroker audit` lists.
func TestCLIScopedKeysAndAudit(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runSecCLI(t, "apikey", "create", "--config", cfg, "--name", "svc-a", "--scope", "proxy",
		"--connections", "team-a-*, shared", "--providers", "acme")
	if code != 0 || !keyLine.MatchString(out) {
		t.Fatalf("apikey create: exit %d, stdout %q, stderr %q; want the key alone", code, out, errOut)
	}
	secret := strings.TrimSpace(out)

	code, out, _ = runSecCLI(t, "apikey", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "proxy") || !strings.Contains(out, "connections=team-a-*,shared providers=acme") {
		t.Fatalf("apikey list: exit %d\n%s", code, out)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]

	for _, bad := range [][]string{
		{"--scope", "admin", "--connections", "a-*"},
		{"--scope", "proxy", "--connections", "a/b"},
		{"--scope", "root"},
	} {
		args := append([]string{"apikey", "create", "--config", cfg, "--name", "x"}, bad...)
		if code, out, errOut := runSecCLI(t, args...); code != 2 || out != "" || errOut == "" {
			t.Errorf("%v: exit %d stdout %q stderr %q; want a usage error", bad, code, out, errOut)
		}
	}

	if code, _, errOut := runSecCLI(t, "apikey", "revoke", "--config", cfg, id); code != 0 {
		t.Fatalf("apikey revoke: %d %s", code, errOut)
	}
	code, out, _ = runSecCLI(t, "audit", "--config", cfg, "--json")
	if code != 0 {
		t.Fatalf("audit: exit %d", code)
	}
	var actions []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		actions = append(actions, e["actor"].(string)+" "+e["action"].(string))
	}
	if strings.Join(actions, ",") != "cli apikey.revoke,cli apikey.create" {
		t.Errorf("audit entries %q, want the revoke then the create", actions)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the audit trail holds the key")
	}
	code, out, _ = runSecCLI(t, "audit", "--config", cfg, "--action", "apikey.create")
	if code != 0 || !strings.Contains(out, "apikey.create") || strings.Contains(out, "apikey.revoke") || !strings.Contains(out, "role=proxy") {
		t.Errorf("audit --action: exit %d\n%s", code, out)
	}
	if code, _, _ := runSecCLI(t, "audit", "--config", cfg, "--limit", "0"); code != 2 {
		t.Errorf("audit --limit 0: exit %d, want 2", code)
	}
}
