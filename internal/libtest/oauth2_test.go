package libtest

import (
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/oauth"
)

// A source built from an oauth2.Config sends its RefreshParams (resource,
// RFC 8707; scope, RFC 6749 §6) on every refresh, and the real
// authorization server accepts the refresh.
func TestRefreshParamsReachTheAuthorizationServer(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	access, refresh, _ := srv.IssueTokens(t, "read", "write")
	srv.Expire(t, access)

	ep, err := client.NewOAuth2Refresher(&oauth2.Config{
		ClientID:     srv.ClientID,
		ClientSecret: srv.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: srv.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader},
	}, oauth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	start := client.FromOAuth2(&oauth2.Token{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer",
		Expiry: time.Now().Add(-time.Minute)})
	s := mustSource(t, client.Config{
		Refresher:     ep,
		Token:         start,
		RefreshParams: url.Values{"resource": {"https://mcp.example/mcp"}, "scope": {"read"}},
	})
	tok, err := s.Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken == access || !srv.Active(t, tok.AccessToken) {
		t.Fatal("the refreshed token is not a new, active token")
	}
	forms := srv.RefreshForms()
	if len(forms) != 1 {
		t.Fatalf("%d refresh requests, want 1", len(forms))
	}
	f := forms[0]
	if f.Get("resource") != "https://mcp.example/mcp" || f.Get("scope") != "read" || f.Get("grant_type") != "refresh_token" {
		t.Errorf("refresh request form = %v; want resource and scope as configured", f)
	}
}
