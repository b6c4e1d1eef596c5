package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadText(t *testing.T, text string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func TestSecuritySections(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := loadText(t, `public_url: https://tb.example
tls_cert_file: `+cert+`
tls_key_file: `+key+`
audit:
  retention: 720h
  stream: stdout
security:
  body_timeout: 2m
  public_body_timeout: 5s
  max_connections: 100
  trust_forwarded_proto: true
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := SecurityConfig{TrustForwardedProto: true, MaxConnections: 100, BodyTimeout: 2 * time.Minute, PublicBodyTimeout: 5 * time.Second}
	if c.Security != want || c.Audit.Retention != 720*time.Hour || c.Audit.Stream != "stdout" || c.TLSCertFile != cert || !c.SecureCookies() {
		t.Errorf("loaded %+v %+v tls %q secure %v", c.Security, c.Audit, c.TLSCertFile, c.SecureCookies())
	}

	for _, bad := range []struct{ text, want string }{
		{"tls_cert_file: " + cert + "\n", "tls_key_file go together"},
		{"tls_cert_file: /nonexistent/c\ntls_key_file: /nonexistent/k\n", "cannot read /nonexistent/c"},
		{"security:\n  body_timeout: soon\n", "security.body_timeout"},
		{"audit:\n  retention: -1h\n", "audit.retention"},
		{"security:\n  max_connection: 3\n", `security.max_connection: unknown setting; did you mean "max_connections"`},
		{"providers:\n  - name: github\n    client_id: x\n    client_secret_env: NOPE_UNSET_X\n    allow_response_headers: [\"Set Cookie\"]\n", "allow_response_headers"},
	} {
		c, err := loadText(t, bad.text)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want one containing %q", bad.text, err, bad.want)
		}
	}
	plain, err := loadText(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if plain.SecureCookies() {
		t.Errorf("the default http public URL asks for Secure cookies")
	}
}
