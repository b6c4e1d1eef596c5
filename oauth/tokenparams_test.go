package oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// TestTokenParamsOnEveryGrant: a resource set in TokenParams reaches the
// token endpoint on the code exchange and on every refresh (RFC 8707 §2.2).
func TestTokenParamsOnEveryGrant(t *testing.T) {
	var mu sync.Mutex
	var got []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got = append(got, r.PostForm)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"a","token_type":"Bearer","expires_in":60,"refresh_token":"r2"}`))
	}))
	defer srv.Close()
	ep, err := oauth.NewEndpoint(oauth.Config{ClientID: "c", TokenURL: srv.URL,
		TokenParams: url.Values{"resource": {"https://mcp.example/mcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := ep.Exchange(ctx, "code", "https://cb", "verifier"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := ep.Refresh(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 {
		t.Fatalf("token endpoint saw %d requests, want 3", len(got))
	}
	for i, f := range got {
		if r := f["resource"]; len(r) != 1 || r[0] != "https://mcp.example/mcp" {
			t.Errorf("request %d (%s): resource = %q, want the MCP server", i, f.Get("grant_type"), r)
		}
	}
}

func TestTokenParamsMayNotOverrideTheGrant(t *testing.T) {
	for _, k := range []string{"grant_type", "refresh_token", "client_secret", "code_verifier"} {
		_, err := oauth.NewEndpoint(oauth.Config{ClientID: "c", TokenURL: "https://as.example/token",
			TokenParams: url.Values{k: {"x"}}})
		if err == nil {
			t.Errorf("TokenParams[%q] accepted", k)
		}
	}
}
