package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fakeWebhookSecret = "whsec-fake-webhook-secret-for-tests"

func TestWebhooksSection(t *testing.T) {
	t.Setenv("TB_HOOK_SECRET", fakeWebhookSecret)
	t.Setenv("TB_SHORT_SECRET", "short")
	secretFile := filepath.Join(t.TempDir(), "hook_secret")
	if err := os.WriteFile(secretFile, []byte(fakeWebhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	endpoint := func(lines string) string { return goodProvider + "webhooks:\n  endpoints:\n" + lines }
	tests := []struct {
		name string
		yaml string
		want string // "" for valid; else a substring of the error
	}{
		{"env secret", endpoint(`
    - name: ops
      url: https://hooks.example/tokenbroker
      secret_env: TB_HOOK_SECRET
      events: [connection.reauth_required, connection.recovered]
`), ""},
		{"file secret", endpoint(`
    - name: ops
      url: http://127.0.0.1:9000/hooks
      secret_file: ` + secretFile + `
`), ""},
		{"missing name", endpoint(`
    - url: https://hooks.example/x
      secret_env: TB_HOOK_SECRET
`), "webhooks.endpoints[0].name"},
		{"duplicate name", endpoint(`
    - name: ops
      url: https://hooks.example/x
      secret_env: TB_HOOK_SECRET
    - name: ops
      url: https://hooks.example/y
      secret_env: TB_HOOK_SECRET
`), "webhooks.endpoints[1].name"},
		{"bad url", endpoint(`
    - name: ops
      url: hooks.example/x
      secret_env: TB_HOOK_SECRET
`), "webhooks.endpoints[0].url"},
		{"no secret", endpoint(`
    - name: ops
      url: https://hooks.example/x
`), "webhooks.endpoints[0].secret_env: required"},
		{"unset env", endpoint(`
    - name: ops
      url: https://hooks.example/x
      secret_env: TB_NOT_SET_ANYWHERE
`), "TB_NOT_SET_ANYWHERE is not set"},
		{"short secret", endpoint(`
    - name: ops
      url: https://hooks.example/x
      secret_env: TB_SHORT_SECRET
`), "shorter than 16 bytes"},
		{"missing file", endpoint(`
    - name: ops
      url: https://hooks.example/x
      secret_file: /nonexistent/hook_secret
`), "webhooks.endpoints[0].secret_file"},
		{"unknown event", endpoint(`
    - name: ops
      url: https://hooks.example/x
      secret_env: TB_HOOK_SECRET
      events: [connection.exploded]
`), `unknown event type "connection.exploded"`},
		{"inline secret", endpoint(`
    - name: ops
      url: https://hooks.example/x
      secret: whsec-inline
`), "use secret_env or secret_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := loadAndValidate(t, tc.yaml)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid webhooks section rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), fakeWebhookSecret):
				t.Fatal("the error contains the secret")
			}
		})
	}
	c, err := Load(writeConfig(t, tests[0].yaml))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Webhooks.Endpoints) != 1 || c.Webhooks.Endpoints[0].Name != "ops" || len(c.Webhooks.Endpoints[0].Events) != 2 {
		t.Fatalf("webhooks section decoded as %+v", c.Webhooks)
	}
	secret, err := c.Webhooks.Endpoints[0].Secret(nil)
	if err != nil || string(secret) != fakeWebhookSecret {
		t.Errorf("Secret() did not return the environment's value (err %v)", err)
	}
}
