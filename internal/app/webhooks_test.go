package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/webhook"
)

// TestWebhooksWired: with a webhooks section in the config, the serving app
// delivers the events of its own writes, signed with the configured secret.
func TestWebhooksWired(t *testing.T) {
	const secret = "whsec-fake-app-test-secret"
	got := make(chan webhook.Payload, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header.Get(webhook.HeaderSignature), body, time.Now(), 0); err != nil {
			t.Errorf("webhook signature: %v", err)
		}
		var p webhook.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook payload: %v", err)
		}
		got <- p
	}))
	defer receiver.Close()
	t.Setenv("E2E_WEBHOOK_SECRET", secret)

	e := newE2E(t)
	e.stop()
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("webhooks:\n  endpoints:\n    - name: ops\n      url: " + receiver.URL + "/hooks\n      secret_env: E2E_WEBHOOK_SECRET\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	e.start()

	access, refresh, _ := e.authz.IssueTokens(t, "offline")
	if code, body := e.do(http.MethodPost, "/v1/connections", map[string]any{
		"id": "bob", "provider": "acme", "access_token": access, "refresh_token": refresh, "expires_in": 3600,
	}); code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	select {
	case p := <-got:
		if p.Type != "connection.created" || p.Connection.ID != "bob" || p.Connection.Provider != "acme" {
			t.Errorf("webhook payload = %+v, want connection.created for bob at acme", p)
		}
	case <-time.After(time.Minute): // a guard against hanging, not a latency check
		t.Fatal("no webhook arrived")
	}
}
